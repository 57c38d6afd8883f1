"""The protocol names a TLS client may offer upstream (ALPN).

A client's offers are bytes of its choosing, up to 255 a name and thousands of names, which mitmproxy
copied into its own handshake with the upstream unread. Only the protocol ids IANA registers for ALPN
are offered on: they name every protocol a client speaks through a TLS connection and carry no data.
"""

from __future__ import annotations

from collections.abc import Iterable

REGISTERED = frozenset(
    {
        b"http/0.9",
        b"http/1.0",
        b"http/1.1",
        b"spdy/1",
        b"spdy/2",
        b"spdy/3",
        b"stun.turn",
        b"stun.nat-discovery",
        b"h2",
        b"h2c",
        b"webrtc",
        b"c-webrtc",
        b"ftp",
        b"imap",
        b"pop3",
        b"managesieve",
        b"coap",
        b"xmpp-client",
        b"xmpp-server",
        b"acme-tls/1",
        b"mqtt",
        b"dot",
        b"ntske/1",
        b"sunrpc",
        b"h3",
        b"smb",
        b"irc",
        b"nntp",
        b"nnsp",
        b"doq",
        b"sip/2",
        b"tds/8.0",
        b"dicom",
        b"postgresql",
        b"radius/1.0",
        b"radius/1.1",
    }
)


def registered_offers(offers: Iterable[bytes]) -> list[bytes]:
    """The offers that name a registered protocol, in the client's order."""
    return [offer for offer in offers if offer in REGISTERED]
