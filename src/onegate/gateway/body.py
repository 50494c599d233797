"""The client's request body, read once from ASGI ``receive`` and written to an upstream.

A body that arrives in one ASGI message (small bodies nearly always do) is kept, so a retry
can send it again; a longer body is streamed straight through and cannot be replayed. The
size limit is enforced while streaming, so a chunked upload cannot slip past it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from onegate.errors import ClientDisconnected, PayloadTooLarge
from onegate.gateway.transport import LAST_CHUNK, encode_chunk
from onegate.types import Receive


class BodySink(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


class RequestBody:
    __slots__ = (
        "_consumed",
        "_receive",
        "chunked",
        "finished",
        "keep",
        "length",
        "limit",
        "replay",
    )

    def __init__(
        self,
        receive: Receive,
        *,
        length: int | None,
        chunked: bool,
        limit: int | None,
        keep: int = 0,
    ) -> None:
        self._receive = receive
        self.length = length
        self.chunked = chunked
        self.limit = limit
        self.keep = keep
        """A body of at most this many bytes is kept, whatever its pieces, for a retry."""
        #: The whole body, when it is known (no body, or it came in one message).
        self.replay: bytes | None = b"" if (not chunked and not length) else None
        self._consumed = False
        #: True once the client has sent its last byte (the ASGI ``receive`` is free again).
        self.finished = self.replay is not None

    @property
    def empty(self) -> bool:
        return self.replay == b"" and not self.chunked

    @property
    def replayable(self) -> bool:
        return self.replay is not None or not self._consumed

    def framing_headers(self) -> list[tuple[bytes, bytes]]:
        if self.chunked:
            return [(b"transfer-encoding", b"chunked")]
        if self.length:
            return [(b"content-length", str(self.length).encode())]
        return []

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces, from memory on a replay, else from the client."""
        if self.replay is not None:
            if self.replay:
                yield self.replay
            return
        if self._consumed:
            raise RuntimeError("request body already streamed and cannot be replayed")
        self._consumed = True
        received = 0
        kept: list[bytes] | None = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("client disconnected while sending the body")
            data: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            received += len(data)
            if self.limit is not None and received > self.limit:
                raise PayloadTooLarge(f"request body exceeds {self.limit} bytes")
            if kept is not None:
                if received <= self.keep or (not more and not kept):
                    kept.append(data)  # small enough to replay (or all in one piece)
                else:
                    kept = None
            if not more:
                self.finished = True
                if kept is not None:
                    self.replay = kept[0] if len(kept) == 1 else b"".join(kept)
            if data:
                yield data
            if not more:
                return

    async def send_to(self, sink: BodySink) -> None:
        if self.empty:
            return
        async for data in self.chunks():
            sink.write(encode_chunk(data) if self.chunked else data)
            await sink.drain()
        if self.chunked:
            sink.write(LAST_CHUNK)
