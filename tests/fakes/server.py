"""A scripted HTTP server for provider tests: real HTTP on 127.0.0.1 (an ephemeral port, a background
thread). Each request takes the next entry of `queue` (a `Reply`, or a callable from the `Received`
request to a `Reply`); when the queue is empty it gets `default_reply`. Every request is recorded in
`requests`, and `ok_count` counts the 200s sent. Replies can be delayed (for timeouts), dropped (the
socket closed unanswered), trickled (one byte at a time) and carry any headers (Retry-After)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the server saw it."""
    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    raw: bytes
    body: Any
    """The JSON body, or None if it was not JSON."""
    at: float = field(default_factory=time.monotonic)
    """When the request arrived (time.monotonic)."""


@dataclass
class Reply:
    """What to answer. body: a dict/list (sent as JSON), str or bytes (sent as is)."""
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client's timeout: a timeout)."""
    drop: bool = False
    """Close the connection without answering."""
    trickle: float = 0.0
    """Seconds between bytes of the body (a server that never stalls long enough for a read timeout)."""


Script = Reply | Callable[[Received], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    """socketserver's default listen backlog is 5: 32 clients connecting at once would wait for SYN
    retransmits (a second or more), which is the fake's doing, not the client's."""


class FakeServer:
    """Base scripted server; subclasses implement `default_reply` and may override `handles`."""

    def __init__(self) -> None:
        self.queue: deque[Script] = deque()
        self.requests: list[Received] = []
        self.ok_count = 0
        self.trickle_ends: list[float] = []
        """When each trickled reply ended (time.monotonic): the client hung up, or all of it was sent."""
        self.lost_creates = 0
        """Batch mode: the next this many batch jobs are made, but their creation is answered with a 503."""
        self.list_lag_s = 0.0
        """Batch mode: a job shows in the list of jobs only this many seconds after it was made."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # clients that hung up: not our business
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # scripting -----------------------------------------------------------------------------------
    def enqueue(self, *replies: Script) -> None:
        self.queue.extend(replies)

    def fail(self, status: int, message: str = "scripted failure", *, retry_after: float | str | None = None,
             headers: dict[str, str] | None = None) -> None:
        """Queue an error reply in the provider's error format."""
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.queue.append(Reply(status, self.error_body(status, message), headers))

    def drop(self) -> None:
        """Queue a dropped connection."""
        self.queue.append(Reply(drop=True))

    def slow(self, delay: float, reply: Reply | None = None) -> None:
        """Queue a reply (default: the normal answer) sent only after `delay` seconds."""
        if reply is None:
            self.queue.append(lambda received: _delayed(self.default_reply(received), delay))
        else:
            self.queue.append(_delayed(reply, delay))

    def created(self, job: Reply) -> Reply:
        """The answer to a batch job's creation (the job is made): `job`, or a 503 while lost_creates."""
        if self.lost_creates:
            self.lost_creates -= 1
            return Reply(503, self.error_body(503, "the job was made, but this answer says it was not"))
        return job

    def listed(self, made: float) -> bool:
        """Whether a batch job made at `made` (time.monotonic) shows in the list yet (see list_lag_s)."""
        return time.monotonic() - made >= self.list_lag_s

    # to override ---------------------------------------------------------------------------------
    def handles(self, method: str, path: str) -> bool:
        return True

    def default_reply(self, received: Received) -> Reply:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message}}

    # lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            script = self.queue.popleft() if self.queue else None
        if not self.handles(received.method, received.path):
            return Reply(404, self.error_body(404, f"no route {received.method} {received.path}"))
        if script is None:
            return self.default_reply(received)
        return script(received) if callable(script) else script


def _delayed(reply: Reply, delay: float) -> Reply:
    return Reply(reply.status, reply.body, reply.headers, delay, reply.drop, reply.trickle)


def _trickle(out: Any, data: bytes, every: float, closing: threading.Event) -> float:
    """Send `data` one byte every `every` seconds until done or the client hangs up; when it ended."""
    try:
        for i in range(len(data)):
            out.write(data[i:i + 1])
            out.flush()
            if closing.wait(every):
                break
    except OSError:
        pass
    return time.monotonic()


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw, body)
            reply = server._answer(received)
            if reply.delay and server._closing.wait(reply.delay):
                reply = Reply(drop=True)
            if reply.drop:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if isinstance(reply.body, (dict, list)):
                data, ctype = json.dumps(reply.body).encode(), "application/json"
            elif isinstance(reply.body, str):
                data, ctype = reply.body.encode(), "application/json"
            else:
                data, ctype = reply.body or b"", "application/json"
            self.send_response(reply.status)
            headers = {"Content-Type": ctype, **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if reply.trickle:
                server.trickle_ends.append(_trickle(self.wfile, data, reply.trickle, server._closing))
                return
            counted = reply.status == 200  # (before the body goes, as the client may act on it at once; not
            if counted:                    # when it cannot go: the client hung up)
                with server._lock:
                    server.ok_count += 1
            try:
                self.wfile.write(data)
            except OSError:
                if counted:
                    with server._lock:
                        server.ok_count -= 1
                raise

        do_POST = do_GET = _serve

    return Handler
