"""An HTTP/2-only upstream over TLS that reads each request whole and then either resets its stream with
the error code it is told or holds it unanswered, noting each reset its peer sends: what a provider's
edge does when it cancels a request, and what the proxy sees when its agent leaves."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from proxy.commands.localca import UpstreamPKI


@dataclass
class H2Request:
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class H2Upstream:
    pki: UpstreamPKI
    reset_with: h2.errors.ErrorCodes | None = None
    """The code each request's stream is reset with once read whole; None holds it unanswered."""
    max_streams: int = 100
    """How many streams the proxy may open at once."""
    received: list[H2Request] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    """The error codes of the resets the proxy sent."""
    settings_acknowledged: threading.Event = field(default_factory=threading.Event)
    """Set once the proxy acknowledged this upstream's settings: only then does it keep to
    ``max_streams`` (until then a peer may open streams under the protocol's defaults)."""

    def __post_init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self.context.set_alpn_protocols(["h2"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.settimeout(30)
                connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                connection.local_settings = h2.settings.Settings(
                    client=False,
                    initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams},
                )
                connection.initiate_connection()
                tls.sendall(connection.data_to_send())
                requests: dict[int, H2Request] = {}
                while data := tls.recv(65536):
                    for event in connection.receive_data(data):
                        self._handle(connection, requests, event)
                    tls.sendall(connection.data_to_send())
        except (OSError, ssl.SSLError):
            return

    def _handle(
        self, connection: h2.connection.H2Connection, requests: dict[int, H2Request], event: h2.events.Event
    ) -> None:
        if isinstance(event, h2.events.RequestReceived):
            requests[event.stream_id] = H2Request(
                {_text(name): _text(value) for name, value in event.headers or []}
            )
        elif isinstance(event, h2.events.DataReceived):
            requests[event.stream_id].body += event.data
            connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            with self.lock:
                self.received.append(requests[event.stream_id])
            if self.reset_with is not None:
                connection.reset_stream(event.stream_id, self.reset_with)
        elif isinstance(event, h2.events.StreamReset):
            with self.lock:
                self.resets.append(int(event.error_code or 0))
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acknowledged.set()

    def close(self) -> None:
        self.listener.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
