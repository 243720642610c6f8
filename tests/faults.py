"""`FlakyProxy`: a TCP proxy on 127.0.0.1 in front of a test server that can fail for a while, mid-operation.

moto keeps its objects in memory, so an outage cannot be a restart of the server: the tests talk to moto through
this proxy and make the outage here, on the same port throughout. `refuse` closes the listening socket and resets every
open connection (connection refused / reset: the server is down); `hang` keeps accepting but forwards nothing
(timeouts: a network partition); `throttle` answers every request `503 SlowDown` (S3 shedding load). An outage can
wait until a number of further HTTP requests have been forwarded, so that it starts in the middle of an operation.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Literal

LOOPBACK = "127.0.0.1"
_REQUEST_LINE_END = b" HTTP/1.1\r\n"
_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)
_SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode()
    + _SLOW_DOWN_BODY
)

Mode = Literal["refuse", "hang", "throttle"]


class FlakyProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; `outage(seconds)` makes it fail for `seconds`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.requests = 0
        """HTTP requests seen from clients so far (forwarded or failed)."""
        self.outages: list[tuple[float, float | None]] = []
        """(start, end) of every outage so far, by `time.monotonic()`; end is None while it lasts."""
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._throttling = False
        self._pending: tuple[int, float, Mode] | None = None  # (request count that starts it, seconds, mode)
        self._over = threading.Event()
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def failing(self) -> bool:
        """Whether an outage is under way or still to start."""
        return self._pending is not None or bool(self.outages and self.outages[-1][1] is None)

    def start(self) -> FlakyProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._over.set()
        self._flowing.set()
        self._close_listener()
        self._reset_connections()

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def outage(self, seconds: float, *, after_requests: int = 0, mode: Mode = "refuse") -> None:
        """Fail for `seconds` once `after_requests` more requests have been forwarded (at once if 0)."""
        with self._lock:
            self._pending = (self.requests + after_requests, seconds, mode)
            self._over.clear()
        self._maybe_start_outage()

    def end_outage(self) -> None:
        """End the current outage now (and cancel one still to start)."""
        with self._lock:
            self._pending = None
        self._over.set()
        self.wait_outage_over()

    def wait_outage_over(self, timeout: float = 300.0) -> None:
        """Block until an outage started or scheduled has ended and the proxy serves again."""
        deadline = time.monotonic() + timeout
        while self.failing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.failing, "the outage did not end"

    # ----- outages ------------------------------------------------------------------------------

    def _maybe_start_outage(self) -> None:
        with self._lock:
            if self._pending is None or self.requests < self._pending[0]:
                return
            _, seconds, mode = self._pending
            self._pending = None
            self.outages.append((time.monotonic(), None))
        if mode == "refuse":
            self._close_listener()
            self._reset_connections()
        elif mode == "hang":
            self._flowing.clear()
        else:
            self._throttling = True
        threading.Thread(target=self._end_outage, args=(seconds, mode), daemon=True).start()

    def _end_outage(self, seconds: float, mode: Mode) -> None:
        self._over.wait(seconds)
        if self._stopped:
            return
        if mode == "refuse":
            self._listen()
        elif mode == "hang":
            self._flowing.set()
        else:
            self._throttling = False
        with self._lock:
            start, _ = self.outages[-1]
            self.outages[-1] = (start, time.monotonic())

    # ----- sockets ------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()

    def _reset_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if from_client:
                    with self._lock:
                        self.requests += chunk.count(_REQUEST_LINE_END)
                    self._maybe_start_outage()  # a refusing outage resets this connection: the chunk is lost
                    if self._throttling:
                        source.sendall(_SLOW_DOWN)
                        break
                self._flowing.wait()
                if self._stopped:
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.difference_update((source, sink))
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
