"""Incremental Content-Encoding decoding: every coding, any chunking, corrupt data and bombs."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
import pytest
from backports import zstd
from hypothesis import given
from hypothesis import strategies as st

from proxy.wire.decoding import (
    BOMB_FLOOR,
    BOMB_RATIO,
    BombError,
    CappedDecoders,
    DecodingError,
    OverCapError,
    StreamDecoder,
    UnsupportedCodingError,
    decode_body,
    supported,
)

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
CAP = 64 << 20
COMPRESSED_EVENTS = {encoding: encode(EVENTS) for encoding, encode in ENCODERS.items()}
"""Compressed once: br at its default quality takes longer than a Hypothesis example may."""


def decode_in_pieces(encoding: str, body: bytes, cuts: list[int], max_decoded_bytes: int = CAP) -> bytes:
    decoder = StreamDecoder(encoding, max_decoded_bytes)
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
    assert decode_in_pieces(encoding, COMPRESSED_EVENTS[encoding], cuts) == EVENTS


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_raw_deflate_without_zlib_header_is_decoded(cuts: list[int]) -> None:
    """Servers that send deflate without the zlib wrapper are decoded too."""
    assert decode_in_pieces("deflate", raw_deflate(EVENTS), cuts) == EVENTS


def test_events_are_released_before_the_body_ends() -> None:
    """Decoded bytes come out of the feed that brought their compressed form, not at the end."""
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    first = compressor.compress(b"data: one\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    decoder = StreamDecoder("gzip", CAP)
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
    decoder = StreamDecoder(encoding, CAP)
    decoder.feed(body[: len(body) // 2])
    with pytest.raises(DecodingError, match="ended early"):
        decoder.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompression_bomb_is_stopped_at_the_cap(encoding: str) -> None:
    """A small body that expands past the cap raises instead of growing memory."""
    bomb = ENCODERS[encoding](b"\0" * (4 << 20))
    assert len(bomb) < 64 << 10
    with pytest.raises(OverCapError, match="exceeds the cap of 1048576 bytes"):
        decode_in_pieces(encoding, bomb, [], max_decoded_bytes=1 << 20)


def test_body_exactly_at_the_cap_is_accepted() -> None:
    """The cap is inclusive: a body of exactly that many bytes decodes."""
    body = b"x" * 1000
    assert decode_in_pieces("br", brotli.compress(body), [], max_decoded_bytes=1000) == body


def test_data_after_the_end_of_a_deflate_stream_is_read_as_another_member() -> None:
    """Trailing bytes after a complete deflate stream are decoded as a further member, never dropped."""
    decoded = decode_body(zlib.compress(b"data") + b"junk", "deflate", 1000)
    assert decoded.content.startswith(b"data") and decoded.problem == "deflate data ended early"


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


UNDECODABLE = [
    "compress",
    "x-compress",
    "COMPRESS",
    "X-Compress",
    " compress ",
    "gzip, compress",
    "compress, gzip",
    "br,x-compress",
    "identity, compress",
    "gzip, br, zstd, compress",
    "gzip;q=1",
    "gzip compress",
    "bzip2",
    "bz2",
    "lzma",
    "xz",
    "lz4",
    "snappy",
    "pack200-gzip",
    "exi",
    "aes128gcm",
    "dcb",
    "dcz",
    "base64",
    "zlib",
    "gzip, x-unknown",
]
"""Coding names and lists this module cannot undo, each spelled as an attacker might."""


@pytest.mark.parametrize("encoding", UNDECODABLE)
def test_an_undecodable_coding_is_unsupported_and_raises_at_construction(encoding: str) -> None:
    """Any coding that cannot be undone, alone, stacked or oddly spelled, fails at once and as
    ``UnsupportedCodingError``: the body is uninspectable, never read as if it were plain."""
    assert not supported(encoding)
    with pytest.raises(UnsupportedCodingError, match="cannot be decoded"):
        StreamDecoder(encoding, CAP)
    with pytest.raises(UnsupportedCodingError):
        decode_body(b"\x1f\x9d\x90AKIA", encoding, CAP)


WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zlib": zlib.compress,
    "raw deflate": raw_deflate,
}


@pytest.mark.parametrize("label", ["gzip", "deflate"])
@pytest.mark.parametrize("wrapping", sorted(WRAPPERS))
def test_each_member_is_read_in_the_wrapping_its_header_names(label: str, wrapping: str) -> None:
    """curl inflates zlib data labelled gzip and servers send raw deflate: whatever a client decodes is
    decoded, member after member (raw deflate ends a body, as it has no header to tell it apart)."""
    if label == "gzip" and wrapping == "raw deflate":
        assert decode_body(raw_deflate(b"body"), label, 1000) == (
            b"",
            "corrupt gzip data: neither a gzip nor a zlib header",
        )
        return
    first = WRAPPERS["zlib" if wrapping == "gzip" else "gzip"](b"first ")
    body = first + WRAPPERS[wrapping](b"second")
    assert decode_in_pieces(label, body, [1, 7, 20]) == b"first second"


@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_every_member_of_a_many_member_body_is_decoded(cuts: list[int]) -> None:
    """Ten gzip members, ten zstd frames: the whole body, whatever the chunking."""
    words = [b"word%d " % number for number in range(10)]
    for encoding, encoder in (("gzip", gzip.compress), ("zstd", zstd.compress), ("deflate", zlib.compress)):
        assert decode_in_pieces(encoding, b"".join(map(encoder, words)), cuts) == b"".join(words)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_body_decodes_to_the_part_before_the_cut(encoding: str) -> None:
    """A body cut inside compressed data yields what a client reading as it receives hands on."""
    body = ENCODERS[encoding](EVENTS)
    decoded = decode_body(body[: len(body) * 3 // 4], encoding, 1 << 20)
    assert decoded.problem is not None and "ended early" in decoded.problem
    assert EVENTS.startswith(decoded.content)


@pytest.mark.parametrize(
    "encoding", ["gzip, br", "br, gzip", "zstd, deflate", "gzip, gzip, gzip", "deflate, br, zstd"]
)
def test_a_bomb_under_stacked_codings_is_stopped_at_the_cap(encoding: str) -> None:
    """Every stage is capped, so a bomb in the inner coding or the outer one stops at the cap."""
    body = b"\0" * (8 << 20)
    for coding in (name.strip() for name in encoding.split(",")):
        body = ENCODERS[coding](body)
    with pytest.raises(OverCapError):
        decode_body(body, encoding, 1 << 20)


def test_capped_decoders_decode_codings_and_charsets_and_refuse_the_rest() -> None:
    """The table mitmproxy reads bodies through: codings capped, text charsets as usual, bz2 refused."""
    decoders = CappedDecoders(1000)
    assert decoders["gzip"](gzip.compress(b"one ") + gzip.compress(b"two")) == b"one two"
    assert decoders["gzip, br"](brotli.compress(gzip.compress(b"stacked"))) == b"stacked"
    assert decoders["utf-8"]("caf\u00e9".encode()) == "caf\u00e9"
    assert decoders["identity"](b"plain") == b"plain"
    with pytest.raises(OverCapError):
        decoders["zstd"](zstd.compress(b"x" * 1001))
    with pytest.raises(DecodingError, match="ended early"):
        decoders["gzip"](gzip.compress(EVENTS)[:100])
    for codec in ("bz2", "zlib", "base64", "x-unknown", "compress"):
        with pytest.raises(UnsupportedCodingError):
            decoders[codec](b"QUFB")


@pytest.mark.parametrize(
    "tail",
    [b"garbage after the member", b"\0" * 16, b"\x1f\x8b\x08corrupt member", zlib.compress(b"x")[:3]],
)
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "gzip, br"])
def test_what_decodes_before_corrupt_data_is_kept(encoding: str, tail: bytes) -> None:
    """Clients hand on what decoded before trailing garbage or a broken later member; so does the
    decoder, with the reason, instead of dropping the whole body from inspection."""
    coding = encoding.split(",")[0]
    body = ENCODERS[coding](b"secret AKIAQWERTY234567ABCD") + tail
    if encoding == "gzip, br":
        body = brotli.compress(body)
    decoded = decode_body(body, encoding, 1000)
    assert decoded.content == b"secret AKIAQWERTY234567ABCD" and decoded.problem is not None


def test_corrupt_data_mid_stream_is_reported_at_the_end() -> None:
    """A stream that turns corrupt yields what decoded before it; the error comes with the end."""
    decoder = StreamDecoder("gzip", CAP)
    assert decoder.feed(gzip.compress(b"first")) == b"first"
    assert decoder.feed(b"\x1f\x8b\x08\xff\xff\xff\xff") == b""
    assert decoder.feed(gzip.compress(b"never")) == b""
    with pytest.raises(DecodingError, match="corrupt gzip"):
        decoder.flush()


BOMB_CODINGS = {
    "gzip": lambda data: gzip.compress(data, 9),
    "deflate": lambda data: zlib.compress(data, 9),
    # Quality 10 packs an event stream tighter than 11 (about 160x against 110x) in a tenth of the time.
    "br": lambda data: brotli.compress(data, quality=10),
    "zstd": lambda data: zstd.compress(data, 19),
}


@pytest.mark.parametrize("coding", sorted(BOMB_CODINGS))
@pytest.mark.parametrize("filler", [b"A", b"a ", b'{"k":"v"},', b"\x00"])
def test_a_bomb_is_stopped_at_the_ratio_within_one_chunk(coding: str, filler: bytes) -> None:
    """Past the floor, no chunk decodes to more than the ratio allows: the one that would raises before
    handing on anything, so a relayed body never makes its reader scan what a bomb inflates to."""
    bomb = BOMB_CODINGS[coding](filler * ((64 << 20) // len(filler)))
    decoder = StreamDecoder(coding, 1 << 30, max_ratio=BOMB_RATIO)
    decoded = 0
    with pytest.raises(BombError):
        for start in range(0, len(bomb), 1024):
            decoded += len(decoder.feed(bomb[start : start + 1024]))
    assert decoded <= BOMB_FLOOR


@pytest.mark.parametrize("coding", sorted(BOMB_CODINGS))
def test_an_event_stream_compressed_whole_is_no_bomb(coding: str) -> None:
    """Real event streams repeat one JSON frame per token and compress 100x and more: under the ratio."""
    events = b"".join(
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o","choices":'
        b'[{"index":0,"delta":{"content":" w%d"},"finish_reason":null}]}\n\n' % number
        for number in range(40_000)
    )
    compressed = BOMB_CODINGS[coding](events)
    decoder = StreamDecoder(coding, 1 << 30, max_ratio=BOMB_RATIO)
    decoded = b"".join(
        decoder.feed(compressed[start : start + 4096]) for start in range(0, len(compressed), 4096)
    )
    assert decoded + decoder.flush() == events


def test_without_a_ratio_only_the_cap_applies() -> None:
    bomb = gzip.compress(b"A" * (8 << 20))
    assert len(StreamDecoder("gzip", 16 << 20).feed(bomb)) == 8 << 20
