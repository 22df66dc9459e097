"""A real HTTP webhook receiver on loopback, scriptable per path, recording every request."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Each path answers from its plan: a list of steps used in order, the last one repeating.

    A step is an int status, a (status, headers) tuple, ("hang", seconds), "hold" (block until release()),
    ("body", status, bytes) (answer with that body) or ("trickle", seconds, n) (send n bytes of a status
    line and headers one per `seconds`, never finishing the headers).
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plans: dict[str, list] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.held = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
            # Headers and body go out in separate writes: without TCP_NODELAY each response
            # waits ~40 ms on the client's delayed ACK, and the receiver, not Doorito, sets the pace.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def handle(self):
                # The client may drop the connection, e.g. after reading only the first few KB.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    plan = receiver.plans.get(self.path, [200])
                    n = receiver.calls[self.path]
                    receiver.calls[self.path] += 1
                    step = plan[min(n, len(plan) - 1)]
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()}
                    )
                headers = {}
                payload = None
                if isinstance(step, tuple) and step[0] == "trickle":
                    with contextlib.suppress(OSError):
                        for byte in (b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * step[2])[: step[2]]:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(step[1])
                    self.close_connection = True
                    return
                if isinstance(step, tuple) and step[0] == "body":
                    _, step, payload = step
                if step == "hold":
                    receiver.held.set()
                    receiver.released.wait(60)
                    step = 200
                elif isinstance(step, tuple) and step[0] == "hang":
                    time.sleep(step[1])
                    step = 200
                if isinstance(step, tuple):
                    step, headers = step
                if payload is None:
                    payload = b'{"ok": true}' if 200 <= step < 300 else b"nope " * 2000
                try:
                    self.send_response(step)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def plan(self, path: str, steps: list) -> str:
        self.plans[path] = steps
        return self.url(path)

    def received(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
