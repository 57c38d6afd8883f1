"""A WebSocket connection holds at most one message under the cap, and lets go of each message once the
next one arrives."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import wsproto
import wsproto.connection
import wsproto.events
from mitmproxy import connection
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.wire import wslimits
from addons.wire.wsclose import CLOSING, POLICY_VIOLATION
from addons.wire.wslimits import OVERFLOWED, TOO_BIG, BoundedConnection, WebSocketLimits, answered, stand_in
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore


def received(fragments: list[bytes], cap: int) -> tuple[list[wsproto.events.Event], connection.Client]:
    """What a bounded server connection reads of ``fragments`` (each a frame of one binary message), and
    its peer."""
    client = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
    wire = b"".join(
        client.send(wsproto.events.BytesMessage(fragment, message_finished=index == len(fragments) - 1))
        for index, fragment in enumerate(fragments)
    )
    peer = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
    server = BoundedConnection(wsproto.ConnectionType.SERVER, conn=peer)
    server.max_message_bytes = cap
    server.receive_data(wire)
    return list(server.events()), peer


def test_a_message_past_the_cap_closes_with_1009() -> None:
    events, peer = received([b"a" * 600, b"a" * 600], cap=1000)
    assert [type(event) for event in events] == [wsproto.events.BytesMessage, wsproto.events.CloseConnection]
    close = events[-1]
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == TOO_BIG
    assert OVERFLOWED[peer] == 1000


def test_messages_under_the_cap_each_count_alone() -> None:
    events = received([b"a" * 600], cap=1000)[0] + received([b"a" * 600], cap=1000)[0]
    assert all(isinstance(event, wsproto.events.BytesMessage) for event in events)


def test_each_message_is_let_go_once_the_next_arrives() -> None:
    runtime = Runtime(
        parse_policy(
            "agents: {bot: {token: t, role: r}}\nroles: {r: {egress: {allow: [a.example]}}}\n",
            "p.yaml",
            environ={},
        ),
        SqliteStateStore(None),
    )
    limits = WebSocketLimits(runtime)
    flow = tflow.twebsocketflow()
    assert flow.websocket is not None
    for number in range(3):
        flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, True, b"message %d" % number))
        limits.websocket_message(flow)
    assert [message.content for message in flow.websocket.messages[-3:]] == [b"", b"", b"message 2"]


def test_a_ping_crosses_as_a_stand_in_and_its_pong_comes_back_as_sent() -> None:
    """A ping's payload never crosses: the other side sees a keyed digest, and the pong echoing it goes
    back with the payload the pinging side expects."""
    secret = b"AKIAQWERTY234567ABCD"
    relayed = stand_in(secret)
    assert secret not in relayed and relayed
    assert answered(relayed) == secret
    assert answered(relayed) != secret  # answered once
    assert answered(b"unasked " + secret) not in (b"", b"unasked " + secret)
    assert stand_in(b"") == b"" and answered(b"") == b""


def test_a_bounded_connection_relays_pings_as_stand_ins() -> None:
    client = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
    wire = client.send(wsproto.events.Ping(payload=b"ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"))
    peer = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
    server = BoundedConnection(wsproto.ConnectionType.SERVER, conn=peer)
    server.receive_data(wire)
    [ping] = list(server.events())
    assert isinstance(ping, wsproto.events.Ping) and b"ghp_" not in ping.payload


class Interleaved(OrderedDict[bytes, bytes]):
    """Pings waiting for their pong, where the first relay to move its ping lets another relay run first,
    as a thread switch between its two steps would."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = threading.Event()
        self.other_ran = threading.Event()

    def move_to_end(self, key: bytes, last: bool = True) -> None:
        if not self.paused.is_set():
            self.paused.set()
            self.other_ran.wait(timeout=1)
        super().move_to_end(key, last)


def test_a_ping_relayed_while_another_is_remembered_leaves_both_relays_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pings waiting for their pong are shared by every connection: one relayed from another thread
    while a ping is being remembered waits for it, where it evicted that ping under it and the first
    relay failed (KeyError)."""
    pinged = Interleaved()
    monkeypatch.setattr(wslimits, "PINGED", pinged)
    monkeypatch.setattr(wslimits, "MAX_PINGS", 1)
    failures: list[BaseException] = []

    def relay() -> None:
        try:
            stand_in(b"first")
        except Exception as error:
            failures.append(error)

    first = threading.Thread(target=relay)
    first.start()
    assert pinged.paused.wait(timeout=5)
    second = stand_in(b"second")
    pinged.other_ran.set()
    first.join()
    assert failures == []
    assert answered(second) == b"second" and len(pinged) <= 1


def test_a_connection_closed_between_two_messages_of_one_read_relays_none_after() -> None:
    """A hook that closes the connection (``close_websocket``) runs between two events of one read: the
    layer asks for the next event afterwards, and gets the close, not the messages that came with it."""
    client = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
    wire = b"".join(client.send(wsproto.events.TextMessage(data=text)) for text in ("m1", "m2", "m3"))
    peer = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
    server = BoundedConnection(wsproto.ConnectionType.SERVER, conn=peer)
    server.receive_data(wire)
    events = server.events()
    first = next(events)
    assert isinstance(first, wsproto.events.TextMessage) and first.data == "m1"
    CLOSING[peer] = POLICY_VIOLATION
    rest = list(events)
    assert [type(event) for event in rest] == [wsproto.events.CloseConnection]
    close = rest[0]
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == POLICY_VIOLATION


@pytest.mark.parametrize(
    ("content", "sizes"),
    [
        ("a" * 3999 + "é" * 10 + "€𝄞" * 2000, []),  # changed or injected: cut every 4000 bytes
        ("aé" * 10, [2, 2, 17]),  # cut as it came, the first cut inside "é"
        ("", []),
    ],
)
def test_a_text_message_is_cut_between_characters_and_sent_as_it_is(content: str, sizes: list[int]) -> None:
    encoded = content.encode()
    frames = list(wslimits.WholeCharacters([b"x" * size for size in sizes], True)(encoded))
    assert "".join(frame.data for frame in frames) == content
    assert [frame.message_finished for frame in frames] == [False] * (len(frames) - 1) + [True]
    # A cut moved back to a character's start lengthens the next frame by at most three bytes.
    assert sizes or all(len(frame.data.encode()) <= 4000 + 3 for frame in frames)


def test_a_text_message_that_is_not_utf8_is_never_sent_altered() -> None:
    with pytest.raises(UnicodeDecodeError):
        list(wslimits.WholeCharacters([], True)(b"ok \xff"))
