"""Local practice-software stand-ins for delivery tests: a webhook receiver and an MLLP receiver.

Both are real servers on port-0 sockets in a background thread. Their
``mode`` can be switched while they run to simulate a receiver that is down,
answers 500, answers slowly, closes mid-response, or answers HL7 AE. Given a
server ``tls`` context, either speaks its protocol inside TLS.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from adapters.hl7.mllp import Frame, FrameDecoder, frame
from adapters.hl7.parse import parse
from adapters.webhook import verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class WebhookReceiver:
    """``mode``: "ok", "500", "slow" (sleeps ``delay`` then 200), "close" (drops mid-answer)."""

    secret: str
    mode: str = "ok"
    port: int = 0
    delay: float = 1.0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle and
                # delayed ACKs add ~40 ms to every keep-alive request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.attempts += 1
                    mode = receiver.mode
                if mode == "close":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "slow":
                    time.sleep(receiver.delay)
                if mode == "500":
                    self._answer(500, b'{"error": "boom"}')
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = verify(receiver.secret, raw, headers.get("x-vethub-signature"))
                with receiver.lock:
                    receiver.received.append(Received(headers, raw, ok))
                self._answer(200, b"{}")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:  # the handshake runs at accept; a failed one is dropped
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivery_ids(self) -> list[str]:
        with self.lock:
            return [r.headers["x-vethub-delivery"] for r in self.received]

    def wait_for(self, n: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.05)
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class MllpReceiver:
    """Answers each frame with an ACK; ``mode``: "AA", "AE", "AR" or "silent"."""

    mode: str = "AA"
    messages: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls: ssl.SSLContext | None = None  # MLLP inside TLS with this server context
    handshake_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        conn.settimeout(10)
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError as exc:
                with self.lock:
                    self.handshake_errors.append(str(exc))
                conn.close()
                return
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for ev in decoder.feed(data):
                    if not isinstance(ev, Frame):
                        continue
                    text = ev.payload.decode("utf-8")
                    with self.lock:
                        self.messages.append(text)
                        mode = self.mode
                    if mode == "silent":
                        time.sleep(5)
                        return
                    msg = parse(text)
                    ack = (
                        f"MSH|^~\\&|PMS||VETHUB||20261127120000||ACK^R01^ACK|A{len(self.messages)}"
                        f"|P|2.5\rMSA|{mode}|{msg.control_id}"
                        + (
                            "|unknown patient\rERR|||204^Unknown key^HL70357|E"
                            if mode != "AA"
                            else ""
                        )
                    )
                    conn.sendall(frame(ack.encode()))

    def wait_for(self, n: int, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def __enter__(self) -> MllpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
