"""HTTP/1.1 over a plain socket, for tests that must control exactly which bytes of a request are sent."""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass


@dataclass
class RawAnswer:
    """An answer read until the server closed the connection (or the timeout passed)."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed_by_server: bool
    seconds: float

    def json(self) -> dict:
        return json.loads(self.body)


class RawRequest:
    """A request whose head and a chosen part of its body are sent, the rest held back (or never sent)."""

    def __init__(self, port: int, path: str, headers: dict[str, str], declared_length: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {declared_length}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.started = 0.0

    def send(self, data: bytes = b"", with_head: bool = True) -> RawRequest:
        if with_head:
            self.started = time.monotonic()
        self.sock.sendall((self.head if with_head else b"") + data)
        return self

    def answer(self, timeout_s: float = 30.0) -> RawAnswer:
        """Read until the server closes the connection, or until a whole answer (Content-Length) came."""
        self.sock.settimeout(timeout_s)
        data, closed = b"", False
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = _content_length(head) if sep else None
            if length is not None and len(body) >= length and not self._expects_close(head):
                break
        seconds = time.monotonic() - self.started
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        return RawAnswer(int(status_line.split()[1]), headers, body, closed, seconds)

    @staticmethod
    def _expects_close(head: bytes) -> bool:
        return b"\r\nconnection: close" in head.lower()

    def close(self) -> None:
        self.sock.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def v2_binary(images: list[bytes]) -> tuple[bytes, bytes, dict[str, str]]:
    """A v2 binary-extension request: (JSON header, binary tail, headers), built by hand from the spec."""
    tail = b"".join(struct.pack("<I", len(b)) + b for b in images)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(tail)},
            }
        ]
    }
    head = json.dumps(header).encode()
    return head, tail, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
