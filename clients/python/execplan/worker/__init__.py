"""execplan worker SDK: run task handlers for the executor (see `_worker.py`)."""

from ._context import TaskContext
from ._errors import NonRetryableError
from ._loader import load_worker
from ._worker import Worker

__all__ = ["NonRetryableError", "TaskContext", "Worker", "load_worker"]
