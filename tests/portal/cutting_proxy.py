"""A TCP proxy that drops one connection mid-request: a real network interruption for clients we do not write."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to an upstream port; the first connection that has carried `cut_after` bytes from
    the client is closed on both sides right there (once per proxy), as a dropped network would."""

    def __init__(self, *, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting; connections in flight end with their peers."""
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        forwarded = 0
        try:
            while data := source.recv(65536):
                if from_client:
                    with self._lock:
                        cut = self.cuts == 0 and forwarded + len(data) >= self.cut_after
                        if cut:
                            self.cuts += 1
                    if cut:
                        target.sendall(data[: self.cut_after - forwarded])
                        break
                target.sendall(data)
                forwarded += len(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
