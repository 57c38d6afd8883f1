"""Incremental Content-Encoding decoding: every coding, any chunking, corrupt data and bombs."""

from __future__ import annotations

import gzip
import zlib

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
import pytest
from backports import zstd
from hypothesis import given
from hypothesis import strategies as st

from proxy.decoding import DecodingError, StreamDecoder, supported

EVENTS = b"".join(
    b'data: {"choices":[{"delta":{"content":"token %d "}}]}\n\n' % number for number in range(400)
)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def decode_in_pieces(encoding: str, body: bytes, cuts: list[int], **options: int) -> bytes:
    decoder = StreamDecoder(encoding, **options)
    output = b""
    previous = 0
    for cut in sorted(min(cut, len(body)) for cut in cuts):
        output += decoder.feed(body[previous:cut])
        previous = cut
    return output + decoder.feed(body[previous:]) + decoder.flush()


@given(
    encoding=st.sampled_from(sorted(ENCODERS)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_any_chunking_decodes_to_the_original(encoding: str, cuts: list[int]) -> None:
    """Compressed bytes cut at arbitrary points decode to exactly the original body."""
    assert decode_in_pieces(encoding, ENCODERS[encoding](EVENTS), cuts) == EVENTS


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_raw_deflate_without_zlib_header_is_decoded(cuts: list[int]) -> None:
    """Servers that send deflate without the zlib wrapper are decoded too."""
    assert decode_in_pieces("deflate", raw_deflate(EVENTS), cuts) == EVENTS


def test_events_are_released_before_the_body_ends() -> None:
    """Decoded bytes come out of the feed that brought their compressed form, not at the end."""
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    first = compressor.compress(b"data: one\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    decoder = StreamDecoder("gzip")
    assert decoder.feed(first) == b"data: one\n\n"


def test_gzip_members_and_zstd_frames_one_after_another_are_all_decoded() -> None:
    """A body of several gzip members or several zstd frames decodes to their concatenation."""
    assert decode_in_pieces("gzip", gzip.compress(b"one ") + gzip.compress(b"two"), [5, 30]) == b"one two"
    assert decode_in_pieces("zstd", zstd.compress(b"one ") + zstd.compress(b"two"), [5, 30]) == b"one two"


def test_stacked_codings_are_undone_in_reverse_order() -> None:
    """``gzip, br`` means gzip was applied first, so br is undone first."""
    body = brotli.compress(gzip.compress(EVENTS))
    assert decode_in_pieces("gzip, br", body, [7, 300]) == EVENTS


def test_identity_passes_bytes_unchanged() -> None:
    """No coding: the bytes come back as they are."""
    assert decode_in_pieces("identity", b"data: x\n\n", [3]) == b"data: x\n\n"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_data_raises(encoding: str) -> None:
    """Bytes that are not valid compressed data raise DecodingError."""
    body = bytearray(ENCODERS[encoding](EVENTS))
    body[2:40] = bytes(range(200, 238))
    with pytest.raises(DecodingError, match=encoding):
        decode_in_pieces(encoding, bytes(body), [])


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_data_raises_at_flush(encoding: str) -> None:
    """A body that stops inside compressed data is reported when it ends."""
    body = ENCODERS[encoding](EVENTS)
    decoder = StreamDecoder(encoding)
    decoder.feed(body[: len(body) // 2])
    with pytest.raises(DecodingError, match="ended early"):
        decoder.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompression_bomb_is_stopped_at_the_cap(encoding: str) -> None:
    """A small body that expands past the cap raises instead of growing memory."""
    bomb = ENCODERS[encoding](b"\0" * (4 << 20))
    assert len(bomb) < 64 << 10
    with pytest.raises(DecodingError, match="exceeds 1048576 bytes"):
        decode_in_pieces(encoding, bomb, [], max_decoded_bytes=1 << 20)


def test_body_exactly_at_the_cap_is_accepted() -> None:
    """The cap is inclusive: a body of exactly that many bytes decodes."""
    body = b"x" * 1000
    assert decode_in_pieces("br", brotli.compress(body), [], max_decoded_bytes=1000) == body


def test_data_after_the_end_of_a_deflate_stream_raises() -> None:
    """Trailing bytes after a complete deflate stream are corrupt input, not silently dropped."""
    with pytest.raises(DecodingError, match="after the end"):
        decode_in_pieces("deflate", zlib.compress(b"data") + b"junk", [])


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("gzip", True),
        ("X-Gzip", True),
        (" br ", True),
        ("zstd", True),
        ("deflate, gzip", True),
        ("identity", True),
        ("compress", False),
        ("gzip, snappy", False),
    ],
)
def test_supported_codings(encoding: str, expected: bool) -> None:
    """supported() accepts each coding the decoder handles, alone or listed, and nothing else."""
    assert supported(encoding) is expected


def test_unsupported_coding_raises_at_construction() -> None:
    """Asking for an unknown coding fails at once, not on the first chunk."""
    with pytest.raises(DecodingError, match="unsupported"):
        StreamDecoder("compress")
