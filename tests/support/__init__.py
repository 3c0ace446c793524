"""Test support shared by the suites: nothing here is a test or a fixture.

    server.py     an in-process `ExecplanServer` (real SQLite file or PostgreSQL DSN,
                  port 0) and `Env`, the handle tests drive it through
    processes.py  `execplan serve` / `execplan worker` as child processes
    history.py    a history reduced to the event kinds a test asserts on
    raw_worker.py `RawWorker`, a WorkerService.Connect stream driven message by message

`tests/` is on sys.path (pytest inserts the directory of the rootless
tests/conftest.py), so the suites import this package as `support`. mypy names it
`tests.support` (explicit package bases), hence, in the importing module:

    if TYPE_CHECKING:
        from tests.support.server import Env
    else:
        from support.server import Env

Modules in here import each other relatively, which works under both names.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
