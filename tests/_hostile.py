"""A hostile OpenAI-compatible server: real HTTP/1.1 on loopback that misbehaves on the wire.

The loopback server (`langchain_disco.testing`) runs on uvicorn, which frames every response
correctly; the faults here live below that: a UTF-8 character split across writes, a chunked
body cut mid-chunk, a TCP reset, a byte-by-byte drip. So this server writes raw bytes on plain
sockets, one thread per connection, and answers every request with ``Connection: close``: a
client socket still open once an exchange is over is a leak, never a pooled keep-alive.

It streams a known answer (``w0 w1 w2 ...`` by default) in the shape llama-server emits (a
role chunk, one chunk per token, a finish chunk, a usage chunk, ``data: [DONE]``, each SSE
event one HTTP chunk) and records for each request exactly the text it sent, whole, before the
fault (`Exchange.text_sent`), so a test can check that the client delivered that and no more.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import select
import socket
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_disco.testing._wire import ChunkFactory

FaultKind = Literal[
    "none",
    "html_502",
    "html_mid_stream",
    "truncated_json",
    "split_utf8",
    "huge_line",
    "empty_choices",
    "no_done",
    "no_finish_no_done",
    "inband_error",
    "reset",
    "cut_mid_chunk",
    "drip",
    "stall",
]
"""What the server does to the stream (``after_tokens`` is where a mid-stream one strikes):

- ``none``: a well-behaved stream;
- ``html_502``: a proxy's HTML 502 page instead of a stream, before any token;
- ``html_mid_stream``: a proxy splices its HTML 502 page into the body, then ends it;
- ``truncated_json``: an SSE event whose JSON is cut short, then the connection is held;
- ``split_utf8``: every event written in pieces split inside its multi-byte characters;
- ``huge_line``: one content event of ``line_bytes`` (an SSE line of that length);
- ``empty_choices``: three chunks with ``"choices": []`` in the middle of the answer;
- ``no_done``: the whole answer and its finish reason, but no ``data: [DONE]``;
- ``no_finish_no_done``: the body ends cleanly, with neither finish reason nor ``[DONE]``;
- ``inband_error``: an ``{"error": ...}`` event, then the connection is held;
- ``reset``: the connection is reset (SO_LINGER 0: a RST, not a FIN);
- ``cut_mid_chunk``: a chunk header, half its bytes, then the connection is closed;
- ``drip``: everything, headers included, written one byte at a time, ``drip_s`` apart;
- ``stall``: nothing more is sent; the connection is held until the client hangs up.
"""

WORDS: tuple[str, ...] = tuple(f"w{i}" if i == 0 else f" w{i}" for i in range(12))
"""The default answer: one token per word."""

UNICODE_WORDS: tuple[str, ...] = (
    "Grüße",
    " 日本語",
    " 🎉",
    " naïve",
    " €5",
    " 𝔘𝔫𝔦",
    " ß",
    " done",
)
"""An answer of 2-, 3- and 4-byte UTF-8 characters, for ``split_utf8``."""

HTML_502_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
"""nginx's own 502 page, what a reverse proxy sends when its upstream dies."""

_SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)
_END_OF_BODY = b"0\r\n\r\n"
_HOLD_S = 30.0
"""How long a held connection waits for the client to hang up (a bound, never reached)."""


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters (those a kind does not use are ignored)."""

    kind: FaultKind = "none"
    after_tokens: int = 0
    """Content tokens sent whole before a mid-stream fault strikes."""
    line_bytes: int = 5 * 1024 * 1024
    """Length of the ``huge_line`` event."""
    drip_s: float = 0.0005
    """Pause between two bytes of a ``drip``."""


@dataclass
class Exchange:
    """One request and what the server did with it, filled in as it happens."""

    fault: Fault
    request: dict[str, Any]
    text_sent: str = ""
    """The content of every content event written whole (all its bytes) so far."""
    tokens_sent: int = 0
    done_sent: bool = False
    """The ``data: [DONE]`` event was written whole: all that is left is the body's end."""
    outcome: str = "open"
    """``completed``; ``closed`` (the server ended it at the fault); ``reset``;
    ``client_hung_up`` (held after the fault until the client closed); ``client_gone`` (a
    write failed); ``held_too_long``; ``stopped`` (the server was shut down meanwhile)."""
    ended: threading.Event = field(default_factory=threading.Event)
    """Set once the outcome is final and the server's socket is closed."""

    def wait_ended(self, timeout_s: float) -> str:
        if not self.ended.wait(timeout_s):
            raise TimeoutError(f"exchange still {self.outcome!r} after {timeout_s}s")
        return self.outcome


class _Stopping(Exception):
    """The server is shutting down: stop writing."""


class HostileServer:
    """Serves ``POST .../chat/completions`` with `fault` (or the faults `arm` queued).

    Use it as a context manager; `base_url` is what an OpenAI client takes.
    """

    def __init__(
        self, fault: Fault | None = None, *, answer: Sequence[str] = WORDS, model: str = "hostile"
    ) -> None:
        self.answer = tuple(answer)
        self.fault = self._checked(fault or Fault())
        self.model = model
        self._armed: deque[Fault] = deque()
        self._exchanges: list[Exchange] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        # Written to once at shutdown and never read: readable for every thread selecting on it.
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, end every exchange still running, and wait for their threads."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._acceptor.is_alive():
            self._acceptor.join(10.0)
        for thread in list(self._threads):
            thread.join(10.0)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def arm(self, *faults: Fault) -> None:
        """Give the next requests these faults, one each, before falling back to `fault`."""
        checked = [self._checked(fault) for fault in faults]
        with self._changed:
            self._armed.extend(checked)

    def _checked(self, fault: Fault) -> Fault:
        if not 0 <= fault.after_tokens <= len(self.answer):
            raise ValueError(
                f"after_tokens={fault.after_tokens} is outside the {len(self.answer)}-token answer"
            )
        return fault

    def exchanges(self) -> list[Exchange]:
        with self._changed:
            return list(self._exchanges)

    def exchange(self, index: int, timeout_s: float = 10.0) -> Exchange:
        """The `index`-th request's exchange, waiting (bounded) for it to arrive."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._exchanges) > index, timeout_s):
                raise TimeoutError(f"no request #{index} within {timeout_s}s")
            return self._exchanges[index]

    # ----------------------------------------------------------------------------- serving

    def _accept(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        exchange: Exchange | None = None
        outcome = "client_gone"
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(10.0)  # bounds every read and write; no test waits that long
            request = _read_request(conn)
            if request is None:
                return
            path, body = request
            if not path.endswith("/chat/completions"):
                conn.sendall(_plain_response(404, b'{"error": {"message": "not found"}}'))
                return
            with self._changed:
                fault = self._armed.popleft() if self._armed else self.fault
                exchange = Exchange(fault, json.loads(body or b"{}"))
                self._exchanges.append(exchange)
                self._changed.notify_all()
            outcome = _Responder(self, conn, exchange).run()
        except _Stopping:
            outcome = "stopped"
        except OSError:
            outcome = "client_gone"
        finally:
            conn.close()
            if exchange is not None:
                exchange.outcome = outcome
                exchange.ended.set()


class _Responder:
    """Writes one response, fault included, recording what was sent whole."""

    def __init__(self, server: HostileServer, conn: socket.socket, exchange: Exchange) -> None:
        self.server = server
        self.conn = conn
        self.exchange = exchange
        self.fault = exchange.fault
        self.chunks = ChunkFactory("chatcmpl-hostile", server.model, include_usage=True)

    def run(self) -> str:
        fault, answer = self.fault, self.server.answer
        if fault.kind == "html_502":
            self._write(_plain_response(502, HTML_502_PAGE, content_type=b"text/html"))
            return "closed"
        self._write(_SSE_HEADERS)
        self._event(self.chunks.role())
        for index in range(len(answer) + 1):
            if index == fault.after_tokens:
                ended = self._strike(index)
                if ended is not None:
                    return ended
            if index < len(answer):
                self._event(self.chunks.content(answer[index]), text=answer[index])
        self._event(self.chunks.finish("stop"))
        self._event(self.chunks.usage(prompt_tokens=7, completion_tokens=len(answer)))
        if fault.kind != "no_done":
            self._event("[DONE]")
            self.exchange.done_sent = True
        self._write(_END_OF_BODY)
        return "completed"

    def _strike(self, index: int) -> str | None:
        """Apply a mid-stream fault before token `index`: an outcome if it ends the response."""
        kind = self.fault.kind
        if kind == "truncated_json":
            whole = json.dumps(self.chunks.content(" never"), ensure_ascii=False)
            self._event(whole[: len(whole) // 2])
            return self._hold()
        if kind == "inband_error":
            self._event({"error": {"message": "upstream overloaded", "type": "server_error"}})
            return self._hold()
        if kind == "stall":
            return self._hold()
        if kind == "html_mid_stream":
            self._write(_chunk(HTML_502_PAGE) + _END_OF_BODY)
            return "closed"
        if kind == "no_finish_no_done":
            self._write(_END_OF_BODY)
            return "closed"
        if kind == "cut_mid_chunk":
            following = self.server.answer[index] if index < len(self.server.answer) else ""
            event = _sse(self.chunks.content(following))
            self._write(f"{len(event):x}\r\n".encode() + event[: len(event) // 2])
            return "closed"
        if kind == "reset":
            self._reset()
            return "reset"
        if kind == "empty_choices":
            for _ in range(3):
                self._event({**self.chunks.content(""), "choices": []})
        elif kind == "huge_line":
            filler = (" w" * self.fault.line_bytes)[: self.fault.line_bytes]
            self._event(self.chunks.content(filler), text=filler)
        return None

    # ----------------------------------------------------------------------------- writing

    def _event(self, data: dict[str, Any] | str, *, text: str | None = None) -> None:
        """Write one SSE event (as one HTTP chunk, or in the pieces the fault asks for)."""
        event = _sse(data)
        if self.fault.kind == "split_utf8":
            pieces = _split_inside_characters(event)
        elif self.fault.kind == "drip":
            pieces = [event[i : i + 1] for i in range(len(event))]
        else:
            pieces = [event]
        for piece in pieces:
            self._send(_chunk(piece))
        if text is not None:
            self.exchange.text_sent += text
            self.exchange.tokens_sent += 1

    def _write(self, data: bytes) -> None:
        """Write raw bytes: at once, or (``drip``) one byte per write."""
        if self.fault.kind == "drip":
            for i in range(len(data)):
                self._send(data[i : i + 1])
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        """One write (after the drip's pause)."""
        pause_s = self.fault.drip_s if self.fault.kind == "drip" else 0.0
        if self.server._stopping.wait(pause_s) if pause_s else self.server._stopping.is_set():
            raise _Stopping
        self.conn.sendall(data)

    def _hold(self) -> str:
        """Keep the connection open until the client hangs up, as it must after a fault."""
        conn, wake = self.conn, self.server._wake_r
        ready, _, _ = select.select([conn, wake], [], [], _HOLD_S)
        if conn in ready:
            try:
                more = conn.recv(1)
            except OSError:  # reset by the client: hung up all the same
                return "client_hung_up"
            return "client_hung_up" if not more else "client_sent_more"
        return "stopped" if wake in ready else "held_too_long"

    def _reset(self) -> None:
        """Reset the connection once the client's kernel has every byte sent so far.

        A RST discards whatever is still in our send queue; waiting for it to drain (bounded)
        makes "the text sent before the fault" exactly what reaches the client.
        """
        deadline = time.monotonic() + 5.0
        while _unacknowledged_bytes(self.conn) and time.monotonic() < deadline:
            if self.server._stopping.wait(0.001):
                raise _Stopping
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.conn.close()


# ----------------------------------------------------------------------------- wire helpers


def _read_request(conn: socket.socket) -> tuple[str, bytes] | None:
    """`(path, body)` of one HTTP/1.1 request, or None if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
        if len(data) > 1 << 20:
            raise OSError("request headers too long")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            return None
        body += more
    return path, body


def _plain_response(
    status: int, body: bytes, *, content_type: bytes = b"application/json"
) -> bytes:
    reason = {404: b"Not Found", 502: b"Bad Gateway"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason, content_type, len(body))
    ) + body


def _sse(data: dict[str, Any] | str) -> bytes:
    # Not ASCII-escaped: multi-byte characters travel as raw UTF-8, as most servers send them.
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _split_inside_characters(data: bytes) -> list[bytes]:
    """`data` cut before every UTF-8 continuation byte: each multi-byte character in pieces."""
    cuts = [i for i in range(1, len(data)) if data[i] & 0xC0 == 0x80]
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _unacknowledged_bytes(conn: socket.socket) -> int:
    """Bytes in the socket's send queue, unsent or not yet acknowledged (SIOCOUTQ)."""
    raw = fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def client_sockets_to(port: int) -> set[int]:
    """Local ports of this process's TCP sockets to `port`, in any state (Linux, /proc).

    Unlike tests/_net.py's ESTABLISHED count, a socket the server has closed but the client
    never did (CLOSE_WAIT) is counted: with ``Connection: close`` on every response, any socket
    still open after an exchange is one the client forgot.
    """
    ours: set[str] = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                ours.add(target[len("socket:[") : -1])
    found: set[int] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in ours:
                    found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def exception_chain(error: BaseException) -> list[BaseException]:
    """`error` and everything chained to it: causes, contexts and grouped errors."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, *getattr(e, "errors", [])]
    return seen
