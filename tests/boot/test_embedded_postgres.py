"""The embedded PostgreSQL: idempotent start, one server only, recovery after a crash."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from common.embedded_postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


def postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.cluster_dir / "postmaster.pid").read_text().splitlines()[0])


def postmasters_for(server: EmbeddedPostgres) -> int:
    """How many postmaster processes serve this cluster (postmasters are the ones started with -D)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"/postgres") and str(server.cluster_dir).encode() in args:
            count += 1
    return count


@pytest.fixture
def server(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg")
    yield server
    server.stop(mode="immediate")


def test_start_is_idempotent_and_runs_one_server(server):
    url = server.start()
    pid = postmaster_pid(server)
    assert server.start() == url
    assert postmaster_pid(server) == pid
    assert postmasters_for(server) == 1
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "doorito"


def test_concurrent_starts_share_one_server(server):
    code = f"from common.embedded_postgres import EmbeddedPostgres as E; print(E({str(server.base_dir)!r}).start())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    urls = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(urls) == 1 and all(p.returncode == 0 for p in procs)
    assert postmasters_for(server) == 1


def test_start_after_a_crash_recovers_with_data(server):
    url = server.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    os.kill(postmaster_pid(server), signal.SIGKILL)  # leaves a stale postmaster.pid behind
    time.sleep(0.2)
    assert server.start() == url
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone()[0] == 42
    assert postmasters_for(server) == 1


def test_long_project_path_restarts_after_its_socket_directory_was_cleaned(tmp_path):
    server = EmbeddedPostgres(tmp_path / ("deep-" * 20) / "pg")  # too long for a Unix socket path
    try:
        server.start()
        assert server.socket_dir != server.base_dir
        server.stop()
        shutil.rmtree(server.socket_dir)  # as a /tmp cleaner would
        with psycopg.connect(server.start()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop(mode="immediate")


def test_stop_without_a_cluster_is_a_no_op(tmp_path):
    EmbeddedPostgres(tmp_path / "never-started").stop()


def test_a_deleted_socket_of_a_live_server_is_healed(server):
    url = server.start()
    (server.socket_dir / ".s.PGSQL.5432").unlink()  # as a /tmp cleaner would
    with psycopg.connect(server.start()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert server.start() == url
