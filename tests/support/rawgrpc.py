"""HTTP/2 connections to a gRPC port over plain sockets, for tests that must control exactly what a client
sends: nothing, the connection preface and nothing more, or a call's headers without its message."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable

SETTINGS, HEADERS = 4, 1
END_HEADERS = 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2); short strings."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def call_headers(method: str) -> bytes:
    """The HEADERS block of a gRPC call of ``method`` (``/package.Service/Method``)."""
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method.encode()),
        (b":authority", b"test"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    return b"".join(_literal(n, v) for n, v in fields)


def connect(port: int, send: str) -> socket.socket:
    """A connection to ``port`` that sends: ``"nothing"``; ``"preface"`` (the client preface and an empty
    SETTINGS frame, then idles); or ``"stalled_call"`` (that, then a ModelInfer call's headers, and never its
    message)."""
    if send not in ("nothing", "preface", "stalled_call"):
        raise ValueError(f"send must be nothing, preface or stalled_call, not {send!r}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if send != "nothing":
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    if send == "stalled_call":
        headers = call_headers("/inference.GRPCInferenceService/ModelInfer")
        sock.sendall(frame(HEADERS, END_HEADERS, 1, headers))
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (what it sent before, SETTINGS or GOAWAY, is read and
    dropped)."""
    while True:
        try:
            if not sock.recv(65536):
                return True
        except BlockingIOError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def count_closed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed."""
    return sum(closed_by_server(s) for s in socks)


def open_fds(pid: int) -> int:
    """File descriptors process ``pid`` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started
