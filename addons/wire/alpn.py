"""Offers upstream only the ALPN protocol names a client offered that are registered ones
(``proxy.wire.alpn``): mitmproxy's TLS setup copies the client's offers into its own handshake with the
upstream, set here before it does."""

from __future__ import annotations

from mitmproxy.tls import ClientHelloData

from proxy.wire.alpn import registered_offers


class AlpnOffers:
    def tls_clienthello(self, data: ClientHelloData) -> None:
        client = data.context.client
        client.alpn_offers = registered_offers(client.alpn_offers)
