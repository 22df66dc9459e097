"""An S3-compatible server on loopback (moto's standalone server) and a proxy in front of it that can go down."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import boto3
import requests

from tests.processes import BIN_DIR, ManagedProcess, free_port

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "doorito-test", "aws_secret_access_key": "doorito-test-secret"}


def start_moto(log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start `moto_server` on a free loopback port and wait until it answers; returns (process, endpoint URL)."""
    port = free_port()
    proc = ManagedProcess(
        "moto",
        [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ),
        log_dir=log_dir,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(endpoint, timeout=2)
            return proc, endpoint
        except (requests.ConnectionError, requests.Timeout):
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"moto_server did not start:\n{proc.output()[-3000:]}")
        time.sleep(0.2)


def s3_client(endpoint: str):
    """A boto3 client of the test server, for checking what the bucket holds."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


class OutageProxy:
    """Forwards 127.0.0.1:<port> to the S3 server. `fail_after(n)`: once clients have sent n more bytes, every
    connection is cut and new ones are refused, as an unreachable bucket would be, until `restore()`."""

    def __init__(self, *, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._budget: int | None = None  # bytes clients may still send; None: unlimited
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._serve()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_after(self, sent_bytes: int) -> None:
        """Go down once clients have sent this many more bytes (0: now)."""
        with self._lock:
            self._budget = sent_bytes
        if sent_bytes == 0:
            self._go_down()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            self._budget = None
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._serve()

    def close(self) -> None:
        self._go_down()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _go_down(self) -> None:
        with self._lock:
            doomed = [self._listener, *self._sockets]
            self._sockets.clear()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: the proxy is down
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client:
                    with self._lock:
                        exhausted = self._budget is not None and len(data) >= self._budget
                        if self._budget is not None:
                            self._budget = max(0, self._budget - len(data))
                    if exhausted:
                        self._go_down()
                        return
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
