"""Bytes and framing as they cross: limits on what a peer may make the proxy hold, HTTP/1 trailers and
joined reads, decoding caps, ALPN, error pages, raw streams and WebSocket limits."""
