"""Compressed streams inside binary content (a gzip'd upload, a zip, a zlib blob) are opened, within the
relayed body's limits, so that the text inside is read."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile
import zipfile
import zlib
from collections.abc import Callable

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
import pytest
from backports import zstd

from proxy.wire.decoding import BombError, OverCapError
from proxy.wire.embedded import MAX_DEPTH, MAX_STARTS, opened

TOKEN = b"ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
NOISE = random.Random(5)  # noqa: S311 - reproducible test bytes, nothing secret
CAP = 8 << 20


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zipped(members: dict[str, bytes], stored: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def streamed_zip(data: bytes) -> bytes:
    """A zip written to a pipe: sizes in a data descriptor after each member."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.written = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk: bytes) -> int:  # type: ignore[override]
            self.written += chunk
            return len(chunk)

    pipe = Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("a.log", "w") as member:
            member.write(data)
        with archive.open("b.log", "w") as member:
            member.write(b"second " + TOKEN)
    return bytes(pipe.written)


def tar_gz(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("notes.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TEXT = b"log line\nkey=" + TOKEN + b"\n"
WRAPPED = {
    "gzip": gzip.compress(TEXT),
    "gzip members": gzip.compress(b"first member\n") + gzip.compress(TEXT),
    "zlib": zlib.compress(TEXT),
    "raw deflate": raw_deflate(TEXT),
    "zip": zipped({"readme.txt": b"hello", "env.txt": TEXT}),
    "zip stored beside deflated": zipped({"a.bin": NOISE.randbytes(300), "env.txt": TEXT}, ("a.bin",)),
    "zip with descriptors": streamed_zip(TEXT),
    "tar.gz": tar_gz(TEXT),
    "gzip in zip": zipped({"env.gz": gzip.compress(TEXT)}),
    "zip in gzip": gzip.compress(zipped({"env.txt": TEXT})),
    "utf-16 in gzip": gzip.compress(TEXT.decode().encode("utf-16")),
    "gzip cut short": gzip.compress(TEXT + NOISE.randbytes(4000))[:-3000],
    "bzip2": bz2.compress(TEXT),
    "xz": lzma.compress(TEXT),
    "zstd": zstd.compress(TEXT),
    "brotli": brotli.compress(TEXT),
    "brotli of a tar": brotli.compress(tar_gz(TEXT)),
    "xz cut short": lzma.compress(TEXT + NOISE.randbytes(40_000))[:-30_000],
    "bzip2 in zip": zipped({"env.bz2": bz2.compress(TEXT)}, ("env.bz2",)),
    "zstd in xz": lzma.compress(zstd.compress(TEXT)),
}


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_the_text_inside_is_opened(name: str) -> None:
    found = opened(WRAPPED[name], CAP)
    assert found.error is None
    assert any(
        TOKEN in content or TOKEN.decode().encode("utf-16-le") in content for content in found.contents
    )


def test_nesting_is_opened_to_its_depth_only() -> None:
    nested = TEXT
    for _ in range(MAX_DEPTH):
        nested = gzip.compress(nested)
    assert TEXT in opened(nested, CAP).contents
    assert TEXT not in opened(gzip.compress(nested), CAP).contents


@pytest.mark.parametrize(
    "body",
    [
        b"",
        NOISE.randbytes(1 << 16),
        b"\x89PNG\r\n\x1a\n" + NOISE.randbytes(4096),
        b"\xff\xd8\xff\xe0" + NOISE.randbytes(4096),
        b"%PDF-1.7\n" + NOISE.randbytes(4096),
    ],
)
def test_content_that_is_no_stream_opens_to_nothing_long(body: bytes) -> None:
    """Random bytes tried as raw deflate decode to short noise at most, never to an error."""
    found = opened(body, CAP)
    assert found.error is None and sum(map(len, found.contents)) < 4096


@pytest.mark.parametrize(
    "compress", [gzip.compress, bz2.compress, lzma.compress, zstd.compress, brotli.compress]
)
def test_a_bomb_stops_at_the_ratio(compress: Callable[[bytes], bytes]) -> None:
    found = opened(compress(bytes(64 << 20)), 256 << 20)
    assert isinstance(found.error, BombError)
    assert sum(map(len, found.contents)) < 64 << 20


@pytest.mark.parametrize(
    "wrap",
    [
        gzip.compress,
        zlib.compress,
        raw_deflate,
        lambda d: zipped({"a": d}),
        bz2.compress,
        lzma.compress,
        zstd.compress,
    ],
)
def test_what_decodes_past_the_cap_stops_there(wrap: Callable[[bytes], bytes]) -> None:
    found = opened(wrap(NOISE.randbytes(1 << 20)), 1 << 19)
    assert isinstance(found.error, OverCapError) and sum(map(len, found.contents)) <= 1 << 19


def test_the_cap_holds_over_all_streams_together() -> None:
    members = zipped({f"{n}.bin": NOISE.randbytes(300_000) for n in range(4)})
    found = opened(members, 1 << 20)
    assert isinstance(found.error, OverCapError) and sum(map(len, found.contents)) <= 1 << 20


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


PDF_STREAM = b"%PDF-1.7\n1 0 obj\n<< /Filter /FlateDecode /Length 99 >>\nstream\r\n"
LATER = {
    "gzip in a tar": tar_of({"readme.txt": b"hello " * 200, "env.gz": gzip.compress(TEXT)}),
    "gzip after a header": b"HDR1" + NOISE.randbytes(700) + gzip.compress(TEXT),
    "zip after a self-extractor stub": b"MZ\x90\x00" + NOISE.randbytes(2000) + zipped({"env.txt": TEXT}),
    "second gzip after junk": gzip.compress(b"first") + b"\x00junk\x00" + gzip.compress(TEXT),
    "gzip stored in a zip": zipped({"env.gz": gzip.compress(TEXT)}, ("env.gz",)),
    "tar.gz of a tar of a gzip": gzip.compress(tar_of({"inner.gz": gzip.compress(TEXT)})),
    "zlib in a pdf stream": PDF_STREAM + zlib.compress(TEXT) + b"\r\nendstream\nendobj\n",
    "tar.xz": lzma.compress(tar_of({"notes.txt": TEXT})),
    "bzip2 after a header": b"HDR1" + NOISE.randbytes(700) + bz2.compress(TEXT),
    "zstd after another's end": lzma.compress(b"first") + zstd.compress(TEXT),
    "xz in a tar": tar_of({"readme.txt": b"hello " * 200, "env.xz": lzma.compress(TEXT)}),
    "gzip after a header whose lengths lie": b"PK\x03\x04"
    + b"\x00" * 22
    + b"\xff\xff\xff\xff"
    + gzip.compress(TEXT),
}


@pytest.mark.parametrize("name", sorted(LATER))
def test_streams_that_start_later_are_found_by_their_magic_bytes(name: str) -> None:
    found = opened(LATER[name], CAP)
    assert found.error is None and any(TOKEN in content for content in found.contents)


@pytest.mark.parametrize(
    "body",
    [
        NOISE.randbytes(8 << 20),
        b"\x1f\x8b\x08\x08" + bytes(6) + b"a" * (1 << 20),  # a gzip header whose name never ends
        b"PK\x03\x04" * (1 << 12),
        b"stream\nxx" + NOISE.randbytes(4096),
        PDF_STREAM + b"\xff\xd8\xff\xe0" + NOISE.randbytes(4096),  # a JPEG in a PDF stream
        b"BZh9" + NOISE.randbytes(4096),
        b"BZh91AY&SY" + NOISE.randbytes(4096),
        b"\xfd7zXZ\x00" + NOISE.randbytes(4096),
        b"\x28\xb5\x2f\xfd" + NOISE.randbytes(4096),
        b"BZh9" * (1 << 12),
    ],
)
def test_magic_bytes_that_start_no_stream_open_nothing(body: bytes) -> None:
    found = opened(body, CAP)
    assert found.error is None and sum(map(len, found.contents)) < 4096


def test_decoys_past_the_bound_stop_the_opening_as_an_error() -> None:
    """A content of more failed starts than are tried cannot be read through: its reading says so."""
    decoys = b"\x1f\x8b\x08\x1f" * MAX_STARTS
    found = opened(decoys + gzip.compress(TEXT), CAP)
    assert isinstance(found.error, OverCapError) and "may start" in str(found.error)
    assert opened(decoys[:-8] + gzip.compress(TEXT), CAP).error is None
