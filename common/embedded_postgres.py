"""A project-local PostgreSQL server, started on demand when DATABASE_URL is unset.

The binaries come from the `pgserver` wheel, so a fresh machine needs nothing
but Python. Every process (web, worker, beat, pytest) may call `start()`: a
file lock serialises them, so there is never a second server, and `pg_ctl`
recognises a stale `postmaster.pid` left by a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


# Located without importing pgserver, whose import has side effects we don't need.
def _pgserver_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pgserver is not installed: it provides the embedded PostgreSQL binaries")
    return Path(spec.submodule_search_locations[0])


POSTGRES_BIN_PATH = _pgserver_dir() / "pginstall" / "bin"
PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DIR = PROJECT_DIR / ".pgdata"
# PostgreSQL refuses to run as root; as root we run it as this system user.
SERVER_USER = "pgserver"
# Base directories whose server this process started (so a test run can stop what it started).
STARTED_HERE: set[Path] = set()
# A Unix socket path must fit in 107 bytes.
_MAX_SOCKET_DIR = 90


class EmbeddedPostgres:
    """One PostgreSQL cluster kept under `base_dir`, on a Unix socket or a loopback port."""

    def __init__(self, base_dir: Path = DEFAULT_DIR, *, port: int | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.cluster_dir = self.base_dir / "cluster"
        self.log_file = self.base_dir / "server.log"
        self.port = port
        self.socket_dir = self._socket_dir()

    def url(self, database: str = "doorito") -> str:
        """Return a libpq URL for `database` on this server."""
        if self.port:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def start(self, database: str = "doorito") -> str:
        """Ensure the server runs and `database` exists; return its URL. Safe to call from many processes."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._init_cluster()
            # A socket directory under /tmp may have been cleaned since the cluster was made.
            if not self.socket_dir.exists():
                self.socket_dir.mkdir(parents=True)
                self._hand_to_server_user(self.socket_dir)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if not self.is_running():
                        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", self._server_options())
                        STARTED_HERE.add(self.base_dir)
                    elif not self.port and not self._socket_file().exists():
                        # Something (a /tmp cleaner) deleted the socket of a live server, which
                        # PostgreSQL never recreates: only a restart makes it reachable again.
                        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log_file))
                    self._create_database(database)
                    return self.url(database)
                except (psycopg.OperationalError, RuntimeError):
                    # Right after a crash the dead postmaster can still look alive
                    # for a moment; wait until it is gone, then start afresh.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs."""
        if not self.base_dir.exists():
            return
        with self._lock():
            if self.is_running():
                self._pg_ctl("stop", "-w", "-m", mode)

    def is_running(self) -> bool:
        """Whether a live postmaster owns the cluster (a stale pid file does not count)."""
        if not (self.cluster_dir / "PG_VERSION").exists():
            return False
        result = self._run([self._bin("pg_ctl"), "status", "-D", str(self.cluster_dir)], check=False)
        return result.returncode == 0

    def _socket_file(self) -> Path:
        return self.socket_dir / ".s.PGSQL.5432"

    def _socket_dir(self) -> Path:
        if len(str(self.base_dir)) <= _MAX_SOCKET_DIR:
            return self.base_dir
        digest = hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"doorito-pg-{digest}"

    def _server_options(self) -> str:
        listen = f"-c listen_addresses=127.0.0.1 -p {self.port}" if self.port else "-c listen_addresses=''"
        return f"{listen} -k {self.socket_dir} -c max_connections=200"

    def _init_cluster(self) -> None:
        if (self.cluster_dir / "PG_VERSION").exists():
            return
        # A crash during initdb leaves a partial directory; initdb refuses a non-empty one.
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        self.cluster_dir.mkdir(parents=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._hand_to_server_user(self.base_dir, self.cluster_dir, self.socket_dir)
        self._run(
            [self._bin("initdb"), "-D", str(self.cluster_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )

    def _create_database(self, database: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')

    def _pg_ctl(self, *args: str) -> None:
        self._run([self._bin("pg_ctl"), "-D", str(self.cluster_dir), *args])

    def _run(self, cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # As root, drop to the server user and its group only: root's group would
        # otherwise deny access to directories like 0701 /tmp/pytest-of-root.
        if os.geteuid() == 0:
            result = subprocess.run(
                cmd, capture_output=True, text=True, check=False, user=SERVER_USER, group=SERVER_USER, extra_groups=[]
            )
        else:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}\n{log}")
        return result

    @staticmethod
    def _bin(name: str) -> str:
        return str(POSTGRES_BIN_PATH / name)

    def _hand_to_server_user(self, *dirs: Path) -> None:
        if os.geteuid() != 0:
            return
        _ensure_server_user()
        entry = pwd.getpwnam(SERVER_USER)
        for directory in dirs:
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        # The server user must be able to reach its directories and the binaries inside the wheel.
        for parent in {*self.base_dir.parents, *POSTGRES_BIN_PATH.parents}:
            parent.chmod(parent.stat().st_mode | 0o001)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.base_dir / "start.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_server_user() -> None:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)  # noqa: S607
