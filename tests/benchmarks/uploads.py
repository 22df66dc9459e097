"""Upload throughput through a real gunicorn vs a plain file copy of the same bytes on the same disk.

Run: .venv/bin/python -m tests.benchmarks.uploads [--size-mb 1024]
Starts its own embedded PostgreSQL and gunicorn in a temporary directory (or uses BENCH_DATABASE_URL, a
PostgreSQL database it may migrate), prints MB/s for both, their ratio, and the server worker's peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from common.embedded_postgres import EmbeddedPostgres
from tests.portal.server import free_port, peak_rss_bytes, start_gunicorn, worker_pid
from tests.processes import PROJECT_DIR, process_env

MB = 1024 * 1024
CHUNK = MB
BOUNDARY = "bench-boundary"


def manage(database_url: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=process_env(database_url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def write_source(path: Path, size: int) -> str:
    block = os.urandom(CHUNK)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for i in range(size // CHUNK):
            piece = block[i % 251 :] + block[: i % 251]  # every MiB different, cheaply
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


def drop_page_cache_of(path: Path) -> None:
    # Both runs read the source from the page cache; make that true for both by reading it once first.
    with open(path, "rb") as f:
        while f.read(8 * CHUNK):
            pass


def plain_copy(src: Path, dst: Path) -> float:
    """Seconds for a streaming read/write copy in 1 MiB chunks (what the server does, minus HTTP)."""
    start = time.perf_counter()
    with open(src, "rb") as i, open(dst, "wb") as o:
        while piece := i.read(CHUNK):
            o.write(piece)
    return time.perf_counter() - start


def kernel_copy(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)  # copy_file_range/sendfile: the fastest copy the disk allows
    return time.perf_counter() - start


def upload(base: str, token: str, src: Path) -> tuple[float, dict]:
    def body():
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{src.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        with open(src, "rb") as f:
            while piece := f.read(CHUNK):
                yield piece
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    start = time.perf_counter()
    response = requests.post(
        f"{base}/api/files",
        data=body(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mb * MB

    with tempfile.TemporaryDirectory(prefix="doorito-bench-", dir=PROJECT_DIR) as tmp:
        # Under the project directory: source, copies and uploads all on the same disk.
        work = Path(tmp)
        database_url = os.environ.get("BENCH_DATABASE_URL")
        pg = None
        if not database_url:
            pg = EmbeddedPostgres(work / "pg", port=free_port())
            database_url = pg.start()
        server = None
        try:
            manage(database_url, "migrate", "--noinput")
            manage(
                database_url,
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model as g; g().objects.get_or_create(username='bench')",
            )
            token = manage(database_url, "portal_token", "create", "bench").strip()
            media = work / "media"
            server, base = start_gunicorn(
                "gunicorn-bench", database_url, work, media, FILE_UPLOAD_MAX_SIZE=str(size + MB)
            )
            worker = worker_pid(server.pid)
            idle = peak_rss_bytes(worker)

            src = work / "source.bin"
            expected = write_source(src, size)
            drop_page_cache_of(src)
            copies, kernel, uploads = [], [], []
            for run in range(args.runs):
                copies.append(plain_copy(src, work / f"copy{run}.bin"))
                kernel.append(kernel_copy(src, work / f"kcopy{run}.bin"))
                (work / f"copy{run}.bin").unlink()
                (work / f"kcopy{run}.bin").unlink()
                elapsed, meta = upload(base, token, src)
                assert meta["sha256"] == expected and meta["size"] == size, meta
                uploads.append(elapsed)
            peak = peak_rss_bytes(worker)
        finally:
            if server is not None:
                server.stop()
            if pg is not None:
                pg.stop()

    best = {name: min(times) for name, times in (("copy", copies), ("kernel", kernel), ("upload", uploads))}
    mbps = {name: size / MB / seconds for name, seconds in best.items()}
    print(f"file size: {args.size_mb} MiB, best of {args.runs} runs, same disk ({PROJECT_DIR})")
    print(f"plain file copy (1 MiB read/write): {mbps['copy']:8.1f} MiB/s")
    print(f"kernel file copy (shutil.copyfile): {mbps['kernel']:8.1f} MiB/s")
    print(f"upload through gunicorn (HTTP, multipart, sha256, sniffing, stored): {mbps['upload']:8.1f} MiB/s")
    print(f"ratio upload / plain copy:  {mbps['upload'] / mbps['copy']:.2f}")
    print(f"ratio upload / kernel copy: {mbps['upload'] / mbps['kernel']:.2f}")
    print(
        f"server worker peak RSS (VmHWM): idle {idle / MB:.0f} MiB, after {args.runs} x {args.size_mb} MiB uploads "
        f"{peak / MB:.0f} MiB (+{(peak - idle) / MB:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
