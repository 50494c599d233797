"""A request run to its end in a background thread, for tests that signal or reload the
gateway while work is in flight."""

from __future__ import annotations

import threading
import time

import httpx


class InFlight:
    """One GET streamed to its end in a thread: its status, body, error and end time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.status = 0
        self.body = b""
        self.error: BaseException | None = None
        self.ended = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=20) as client, client.stream("GET", self.url) as response:
                self.status = response.status_code
                for piece in response.iter_raw():
                    self.body += piece
        except BaseException as error:
            self.error = error
        finally:
            self.ended = time.monotonic()

    @property
    def events(self) -> int:
        """Server-sent events received so far."""
        return self.body.count(b"data: ")

    def join(self, timeout: float = 20) -> InFlight:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.url} never ended"
        return self
