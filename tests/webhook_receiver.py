"""An HTTP endpoint on loopback standing in for webhook, Slack and PagerDuty destinations."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.upstream import SHUTDOWN_POLL_S


@dataclass(frozen=True)
class Delivery:
    """One POST as it arrived, with the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """Records every POST and answers it with the next scripted status, then 200 once the script is spent."""

    def __init__(self, statuses: Sequence[int] = (), port: int = 0) -> None:
        self.deliveries: list[Delivery] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.deliveries.append(Delivery(self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read ``deliveries``."""

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        """Every body received, parsed, whatever it was answered."""
        return [json.loads(delivery.body) for delivery in list(self.deliveries)]

    def accepted(self) -> list[dict[str, Any]]:
        """The bodies answered 200, parsed."""
        return [json.loads(delivery.body) for delivery in list(self.deliveries) if delivery.status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
