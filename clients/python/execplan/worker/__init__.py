"""execplan worker SDK: run task handlers for the executor (see `_worker.py`)."""

from ._context import PreviousError, TaskContext
from ._errors import NonRetryableError, RateLimited, ResourceExhausted
from ._loader import load_worker
from ._subplan import SubPlan
from ._usage import Output
from ._worker import Worker

__all__ = [
    "NonRetryableError",
    "Output",
    "PreviousError",
    "RateLimited",
    "ResourceExhausted",
    "SubPlan",
    "TaskContext",
    "Worker",
    "load_worker",
]
