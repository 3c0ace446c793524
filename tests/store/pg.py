"""A real PostgreSQL server for tests: started once per session, stopped at its end.

    from .pg import pg_dsn, pg_server  # noqa: F401  (fixtures)

`pg_server` runs initdb into a fresh temporary directory and `pg_ctl start` on a free
127.0.0.1 port (socket in that directory), as the `postgres` user when the tests run
as root (PostgreSQL refuses root). `pg_dsn` gives each test its own empty database.
Without the binaries the tests FAIL (a skipped store test is not a pass): the
README's set-up installs them (`apt-get install -y postgresql`), as `.ci/run` does.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest


def find_bin_dir() -> Path | None:
    """Directory holding initdb/pg_ctl: on PATH, else the newest /usr/lib/postgresql."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="execplan-pg-"))
        self.port = 0
        self._as_root = os.geteuid() == 0
        self._started = False
        self._names = itertools.count()

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        self.port = _free_port()
        # Durability is PostgreSQL's job, not these tests': fsync off keeps them fast.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "log"), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# One server per session even when several modules import the fixture (pytest then
# holds one fixture definition per module; they all share this instance).
_server: PgServer | None = None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    global _server  # noqa: PLW0603
    if _server is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            message = (
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
                "/usr/lib/postgresql/*/bin; install them: apt-get install -y postgresql"
            )
            pytest.fail(message)
        server = PgServer(bin_dir)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _server = server
    yield _server
    if _server is not None:
        server, _server = _server, None
        server.stop()


@pytest.fixture
async def pg_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """DSN of a fresh, empty database, dropped after the test."""
    name = await pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test once on a new SQLite file and once on a fresh PostgreSQL database
    (import it with `pg_dsn` and `pg_server`)."""
    if request.param == "sqlite":
        return str(tmp_path / "execplan.db")
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn
