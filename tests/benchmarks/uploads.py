"""Upload throughput through a real gunicorn vs a plain file copy of the same bytes on the same disk.

Run: .venv/bin/python -m tests.benchmarks.uploads [--size-mb 1024] [--runs 2] [--patch-mb 8]
Starts its own embedded PostgreSQL and gunicorn (one sync worker) in a temporary directory (or uses
BENCH_DATABASE_URL, a PostgreSQL database it may migrate). Three paths, in the same run: a plain file copy, the
single-request upload (multipart POST /api/files) and a tus upload in --patch-mb PATCHes (/api/uploads/). Prints
MiB/s for each, the ratios to the plain copy, and the server worker's peak memory growth during each upload path
(VmHWM, reset through /proc/<pid>/clear_refs before each path).
"""

from __future__ import annotations

import argparse
import base64
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


def tus_upload(base: str, token: str, src: Path, patch_size: int) -> tuple[float, str]:
    """Seconds for a tus upload of `src` in `patch_size` PATCHes on one keep-alive connection; returns the file id."""
    session = requests.Session()
    tus = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    start = time.perf_counter()
    created = session.post(
        f"{base}/api/uploads/",
        headers={
            **tus,
            "Upload-Length": str(src.stat().st_size),
            "Upload-Metadata": f"filename {base64.b64encode(src.name.encode()).decode()}",
        },
        timeout=60,
    )
    created.raise_for_status()
    url = created.headers["Location"]
    offset = 0
    with open(src, "rb") as f:
        while piece := f.read(patch_size):
            response = session.patch(
                url,
                data=piece,
                headers={**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
                timeout=600,
            )
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
    elapsed = time.perf_counter() - start
    return elapsed, url.rsplit("/", 1)[-1]


def sink_patches(base: str, src: Path, patch_size: int) -> float:
    """Seconds to send `src` in `patch_size` PATCHes to the HTTP sink: the same HTTP, nothing stored."""
    session = requests.Session()
    start = time.perf_counter()
    with open(src, "rb") as f:
        while piece := f.read(patch_size):
            session.patch(f"{base}/sink", data=piece, timeout=600).raise_for_status()
    return time.perf_counter() - start


def reset_peak_rss(pid: int) -> int:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0) and return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--patch-mb", type=int, default=8)
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
        server = sink = None
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
            sink, sink_base = start_gunicorn(
                "gunicorn-sink", database_url, work, media, app="tests.benchmarks.http_sink:app"
            )

            src = work / "source.bin"
            expected = write_source(src, size)
            drop_page_cache_of(src)
            copies, kernel, uploads, tus, ceiling = [], [], [], [], []
            growth = {"upload": 0, "tus": 0}
            for run in range(args.runs):
                copies.append(plain_copy(src, work / f"copy{run}.bin"))
                kernel.append(kernel_copy(src, work / f"kcopy{run}.bin"))
                (work / f"copy{run}.bin").unlink()
                (work / f"kcopy{run}.bin").unlink()
                before = reset_peak_rss(worker)
                elapsed, meta = upload(base, token, src)
                growth["upload"] = max(growth["upload"], peak_rss_bytes(worker) - before)
                assert meta["sha256"] == expected and meta["size"] == size, meta
                uploads.append(elapsed)
                before = reset_peak_rss(worker)
                elapsed, file_id = tus_upload(base, token, src, args.patch_mb * MB)
                growth["tus"] = max(growth["tus"], peak_rss_bytes(worker) - before)
                meta = requests.get(
                    f"{base}/api/files/{file_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
                ).json()
                assert meta["sha256"] == expected and meta["size"] == size, meta
                tus.append(elapsed)
                ceiling.append(sink_patches(sink_base, src, args.patch_mb * MB))
                shutil.rmtree(media / "uploads")  # keep the disk as full as at the start of the run
        finally:
            for process in (server, sink):
                if process is not None:
                    process.stop()
            if pg is not None:
                pg.stop()

    timings = (("copy", copies), ("kernel", kernel), ("upload", uploads), ("tus", tus), ("http", ceiling))
    best = {name: min(times) for name, times in timings}
    mbps = {name: size / MB / seconds for name, seconds in best.items()}
    print(f"file size: {args.size_mb} MiB, best of {args.runs} runs, same disk ({PROJECT_DIR})")
    print(f"plain file copy (1 MiB read/write): {mbps['copy']:8.1f} MiB/s")
    print(f"kernel file copy (shutil.copyfile): {mbps['kernel']:8.1f} MiB/s")
    print(f"single-request upload (HTTP, multipart, sha256, sniffing, stored): {mbps['upload']:8.1f} MiB/s")
    tus_label = f"tus upload, {args.patch_mb} MiB PATCHes (fsync per PATCH, sha256 at the end, stored)"
    print(f"{tus_label}: {mbps['tus']:8.1f} MiB/s")
    print(f"HTTP ceiling, {args.patch_mb} MiB PATCHes to gunicorn, body read and dropped: {mbps['http']:8.1f} MiB/s")
    print(f"ratio single-request upload / plain copy: {mbps['upload'] / mbps['copy']:.2f}")
    print(f"ratio tus upload / plain copy:            {mbps['tus'] / mbps['copy']:.2f}")
    print(f"ratio single-request upload / kernel copy: {mbps['upload'] / mbps['kernel']:.2f}")
    print(f"ratio tus upload / kernel copy:            {mbps['tus'] / mbps['kernel']:.2f}")
    print(f"ratio HTTP ceiling / plain copy:          {mbps['http'] / mbps['copy']:.2f}")
    print(f"ratio tus upload / HTTP ceiling:          {mbps['tus'] / mbps['http']:.2f}")
    print(f"server worker RSS: idle {idle / MB:.0f} MiB")
    for name, label in (("upload", "single-request upload"), ("tus", "tus upload")):
        print(f"server worker peak RSS growth during the {label}: +{growth[name] / MB:.1f} MiB")


if __name__ == "__main__":
    main()
