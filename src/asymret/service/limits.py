"""The service's limits below the application: the request body counted while it streams in, dropped uploads
logged in one line, requests that must arrive in time, and the listening socket bound before anything is announced.

- :class:`BodyLimit` (ASGI middleware): a ``Content-Length`` over the limit is refused before a byte of the body is
  read; a chunked body is counted chunk by chunk and refused (413) as soon as it passes the limit — never read
  whole first.  A client that disconnects mid-upload is one log line, not a traceback.
- :func:`deadline_protocol` (uvicorn's h11 protocol): a connection must deliver a complete request (headers and
  body) within ``request_timeout`` seconds of opening or of its previous answer, else it is closed — a client that
  connects and sends nothing, or trickles its headers or body byte by byte, cannot hold a connection forever.
  Idle keep-alive connections are closed after ``timeout_keep_alive`` (uvicorn's own timer).
- :func:`bind_listener` / :func:`run_service`: the port is bound first, so a busy port is one clear error before
  the service says it is serving.
"""
from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["BodyLimit", "BodyTooLarge", "ServerLimits", "bind_listener", "deadline_protocol", "uvicorn_server", "run_service"]

#: multipart framing (boundaries, part headers, form fields) allowed on top of the upload limit
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(Exception):
    """Raised inside the application's ``receive`` when the body passes the limit (turned into a 413 here)."""


class BodyLimit:
    """ASGI middleware: at most ``limit`` body bytes per request, counted as they arrive; ``setting`` names what sets
    the limit in the 413's detail."""

    def __init__(self, app: Callable, limit: int, setting: str = "") -> None:
        self.app, self.limit = app, int(limit)
        self.setting = f" ({setting})" if setting else ""

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:  # refused from the header: the body is never read
            # ... and the connection closed: kept alive, the server would go on receiving (and discarding) it
            await _send_json(send, 413, f"body of {declared:,} bytes is over the limit of {self.limit:,} bytes{self.setting}",
                             close=True)
            return
        received = 0
        response_started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(received)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if response_started:
                raise
            # the connection is closed after this answer: the rest of the body is never read
            await _send_json(send, 413, f"body is over the limit of {self.limit:,} bytes{self.setting} (refused "
                                        f"after {received:,} bytes, while streaming)", close=True)
        except Exception as error:
            if not _is_disconnect(error):
                raise
            client = scope.get("client") or ("?", 0)
            # one short line (the CLI's log handler wraps at the console width): a client going away is routine
            log.warning("%s:%s dropped its %s request after %s body bytes", client[0], client[1], scope.get("path"), f"{received:,}")


def _is_disconnect(error: BaseException) -> bool:
    from starlette.requests import ClientDisconnect

    return isinstance(error, ClientDisconnect)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the application answers it (400)
    return None


async def _send_json(send: Callable, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class ServerLimits:
    """What uvicorn enforces per connection (``asymret serve``'s ``--request-timeout`` etc.)."""

    request_timeout: float = 30.0  # a whole request (headers + body) must arrive within this, from connect or the last answer
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int | None = 256  # more concurrent connections (or requests) are answered 503 by uvicorn


def deadline_protocol(timeout: float) -> type:
    """An h11 protocol class closing connections that do not deliver a complete request within ``timeout``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        request_timeout = timeout

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_request_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_request_deadline()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_request_deadline()  # the next request on this connection has its own deadline

        def _arm_request_deadline(self) -> None:
            self._cancel_request_deadline()
            self._request_deadline = self.loop.call_later(self.request_timeout, self._request_deadline_passed)

        def _cancel_request_deadline(self) -> None:
            handle = getattr(self, "_request_deadline", None)
            if handle is not None:
                handle.cancel()
                self._request_deadline = None

        def _request_deadline_passed(self) -> None:
            self._request_deadline = None
            # DONE: the request arrived whole and is being answered — its processing is not the client's delay
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                return
            if self.conn.their_state is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
                return  # pragma: no cover - a request cycle without its request: nothing to time out
            client = self.client or ("?", 0)
            missing = "whole body" if self.conn.their_state is h11.SEND_BODY else "whole request"
            log.warning("closed %s:%s: no %s within %g s", client[0], client[1], missing, self.request_timeout)
            self.transport.close()

    return DeadlineH11Protocol


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or OSError with one clear sentence (a busy port, an unknown host)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise OSError(f"cannot serve on {host}:{port}: unknown host ({error.strerror})") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart is not blocked by TIME_WAIT
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        reason = "the port is in use (another process listens there: stop it or pick another --port)" \
            if error.errno in (98, 48, 10048) else (error.strerror or str(error))
        raise OSError(f"cannot serve on {host}:{port}: {reason}") from None
    listener.set_inheritable(True)
    return listener


def uvicorn_server(app, listener: socket.socket, limits: ServerLimits = ServerLimits(), log_level: str = "warning"):
    """A ``uvicorn.Server`` for ``app`` on ``listener`` with ``limits`` (run it with ``server.run([listener])``)."""
    import uvicorn

    host, port = listener.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=deadline_protocol(limits.request_timeout),
                            timeout_keep_alive=limits.keep_alive_timeout, limit_concurrency=limits.max_connections)
    return uvicorn.Server(config)


def run_service(app, listener: socket.socket, limits: ServerLimits = ServerLimits()) -> None:
    """Serve ``app`` on ``listener`` in the foreground until interrupted (``asymret serve``)."""
    uvicorn_server(app, listener, limits).run(sockets=[listener])
