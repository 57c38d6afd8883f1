"""Bytes as they cross the wire: bounded decompression and Server-Sent Events framing."""
