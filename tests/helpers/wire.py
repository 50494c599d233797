"""Raw-socket helpers for the client-edge suites (``tests/integration/edge``).

What a client sees on the wire, without an HTTP library smoothing it over: every response on
a connection, and how the connection ended (a clean FIN, a reset, or still open).
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

import httpx

HOST = "127.0.0.1"
EOF_ = "eof"
RESET = "reset"
OPEN = "open"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, str]:
    """Everything the server sends until it closes (``eof`` or ``reset``) or ``within``
    seconds pass (``open``)."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return received, OPEN
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, OPEN
        except ConnectionResetError:
            return received, RESET
        if not data:
            return received, EOF_
        received += data


def nothing_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server neither sends nor closes for ``seconds``."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    del data  # an answer, or a close: either way not nothing
    return False


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]+)[^\r\n]*\r\n")


def split_responses(data: bytes) -> tuple[list[Response], bytes]:
    """The complete responses at the start of ``data``, and what is left after them.

    Bodies are framed by Content-Length or chunked coding, as the gateway sends them; a
    response with neither runs to the end of ``data``.
    """
    responses: list[Response] = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        status_line, *lines = data[:end].split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            break
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in lines)
        ]
        rest = data[end + 4 :]
        response = Response(int(parts[1]), headers, b"")
        length = response.header(b"content-length")
        if length is not None:
            if len(rest) < int(length):
                break
            response.body, data = rest[: int(length)], rest[int(length) :]
        elif response.header(b"transfer-encoding") == b"chunked":
            body, remainder = _dechunk(rest)
            if remainder is None:
                break
            response.body, data = body, remainder
        else:
            response.body, data = rest, b""
        responses.append(response)
    return responses, data


def _dechunk(data: bytes) -> tuple[bytes, bytes | None]:
    body = b""
    while True:
        match = _CHUNK_SIZE.match(data)
        if match is None:
            return body, None
        size = int(match.group(1), 16)
        data = data[match.end() :]
        if size == 0:
            end = data.find(b"\r\n")
            return (body, data[end + 2 :]) if end >= 0 else (body, None)
        if len(data) < size + 2:
            return body, None
        body += data[:size]
        data = data[size + 2 :]


def metric(gateway_url: str, name: str, **labels: str) -> float:
    """The value of one sample of the gateway's /metrics (0 if it is not there yet)."""
    text = httpx.get(gateway_url + "/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name or series == f"{name}{{{wanted}}}":
            total += float(value)
    return total


def read_responses(sock: socket.socket, count: int, within: float) -> list[Response]:
    """Read until ``count`` complete responses arrived (fails after ``within`` seconds)."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        responses, _ = split_responses(received)
        if len(responses) >= count:
            return responses
        left = deadline - time.monotonic()
        assert left > 0, f"{len(responses)} of {count} responses; got {received[:300]!r}"
        sock.settimeout(left)
        data = sock.recv(65536)
        assert data, f"closed after {len(responses)} of {count} responses"
        received += data
