"""A real gunicorn serving Doorito, and its memory use; no Django import, so benchmarks can use it too."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import requests

from tests.processes import ManagedProcess, free_port, gunicorn_command, process_env


def start_gunicorn(
    name: str,
    database_url: str,
    log_dir: Path,
    media: Path,
    *,
    workers: int = 1,
    app: str = "boot.wsgi",
    **env: str,
) -> tuple[ManagedProcess, str]:
    """Start `gunicorn boot.wsgi` (sync workers, Test configuration) and wait until it answers /healthz."""
    port = free_port()
    args = gunicorn_command("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "600", app=app)
    proc = ManagedProcess(
        name,
        args,
        env=process_env(database_url, DJANGO_MEDIA_ROOT=str(media), **env),
        log_dir=log_dir,
        cwd=log_dir,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"gunicorn did not start:\n{proc.output()[-3000:]}")
        time.sleep(0.2)


def worker_pids(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers."""
    return [int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def worker_pid(master_pid: int) -> int:
    """The pid of a one-worker gunicorn's worker."""
    children = worker_pids(master_pid)
    assert len(children) == 1, children
    return children[0]


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


MB = 1024 * 1024


def upload_generated_file(base: str, token: str, size: int) -> tuple[requests.Response, str]:
    """POST a `size`-byte file (whole MiBs) generated on the fly, 1 MiB held at a time; returns (response, sha256)."""
    block = bytes(range(256)) * 4096  # 1 MiB, not all-zero so nothing can compress it away
    digest = hashlib.sha256()

    def body():
        yield (
            b'--big-upload-boundary\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(size // MB):
            digest.update(block)
            yield block
        yield b"\r\n--big-upload-boundary--\r\n"

    response = requests.post(
        f"{base}/api/files",
        data=body(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=big-upload-boundary",
        },
        timeout=300,
    )
    return response, digest.hexdigest()


def download_sha256(base: str, token: str, file_id: str) -> tuple[requests.Response, str]:
    """GET a file's download, streamed in 1 MiB pieces; returns (response, sha256 of the bytes received)."""
    download = requests.get(
        f"{base}/api/files/{file_id}/download", headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=300
    )
    digest = hashlib.sha256()
    for piece in download.iter_content(MB):
        digest.update(piece)
    return download, digest.hexdigest()
