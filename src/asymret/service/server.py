"""The application under uvicorn in a background thread on a free loopback port — for tests, screenshots and
notebooks (``asymret serve`` runs uvicorn in the foreground instead), with the same connection limits."""
from __future__ import annotations

import socket
import threading
import time

from .limits import ServerLimits, bind_listener, uvicorn_server

__all__ = ["BackgroundServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/readyz")`` — started when constructed."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 20.0,
                 limits: ServerLimits = ServerLimits()) -> None:
        self.listener = bind_listener(host, port or 0)  # port 0: the system picks a free one, no race with another test
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn_server(app, self.listener, limits)
        self.thread = threading.Thread(target=self.server.run, args=([self.listener],), name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
