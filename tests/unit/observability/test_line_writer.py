"""Batched log writes: whole lines, each write small enough for a pipe to keep in one piece."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

from onegate.observability.linewriter import ATOMIC_BYTES, LineWriter


@pytest.fixture
def packets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A socket pair that keeps message boundaries: one ``recv`` returns exactly one write."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setblocking(False)
    with reader, writer:
        yield reader, writer


def received(reader: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(reader.recv(1 << 20))
        except BlockingIOError:
            return messages


def test_many_lines_are_written_in_whole_line_chunks(
    packets: tuple[socket.socket, socket.socket],
) -> None:
    reader, sink = packets
    writer = LineWriter(sink.fileno())
    lines = [f"line {i:04d} " + "x" * (i % 300) for i in range(200)]
    for line in lines:
        writer.write(line)
    writer.flush()
    writes = received(reader)
    assert 1 < len(writes) < len(lines)  # batched, not one write per line
    assert all(len(chunk) <= ATOMIC_BYTES and chunk.endswith(b"\n") for chunk in writes)
    assert b"".join(writes).decode().splitlines() == lines


def test_a_line_longer_than_a_pipe_write_goes_out_whole(
    packets: tuple[socket.socket, socket.socket],
) -> None:
    reader, sink = packets
    writer = LineWriter(sink.fileno())
    long_line = "y" * (ATOMIC_BYTES * 2)
    for line in ("a", long_line, "b"):
        writer.write(line)
    writer.flush()
    assert received(reader) == [b"a\n", long_line.encode() + b"\n", b"b\n"]


def test_a_burst_flushes_itself(packets: tuple[socket.socket, socket.socket]) -> None:
    reader, sink = packets
    writer = LineWriter(sink.fileno(), max_pending=10)
    for i in range(9):
        writer.write(str(i))
    assert received(reader) == []
    writer.write("9")
    assert b"".join(received(reader)).decode().splitlines() == [str(i) for i in range(10)]


def test_a_broken_stream_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads: writing raises EPIPE (SIGPIPE is ignored by Python)
    try:
        writer = LineWriter(write)
        with caplog.at_level(logging.ERROR, "onegate.observability"):
            writer.write("lost")
            writer.flush()
            writer.write("lost too")
            writer.flush()
    finally:
        os.close(write)
    assert len([r for r in caplog.records if "access log" in r.getMessage()]) == 1
