"""inflate_into (system zlib through ctypes, and the decompressobj loop) against gzip."""

from __future__ import annotations

import gzip
import sys
import zlib

import numpy as np
import pytest

from medcurric.io import _zlib
from medcurric.io._zlib import have_ctypes_zlib, inflate_into

PATHS = [
    pytest.param(
        True,
        id="ctypes",
        marks=pytest.mark.skipif(
            not have_ctypes_zlib(), reason="no system zlib loadable through ctypes"
        ),
    ),
    pytest.param(False, id="loop"),
]


def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300_000).astype(np.uint8)
    labels.sort()  # long runs, like a label map: compresses ~1000:1
    return [
        b"",
        b"x",
        b"hello",
        rng.integers(0, 256, 70_000, dtype=np.uint8).tobytes(),  # incompressible
        labels.tobytes(),
        np.repeat(np.arange(50, dtype=np.int16), 4000).tobytes(),
    ]


def test_linux_loads_the_system_zlib() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the ctypes path is only required on Linux")
    assert have_ctypes_zlib()


@pytest.mark.parametrize("use_ctypes", PATHS)
@pytest.mark.parametrize("level", [1, 9])
def test_round_trip_equals_gzip(use_ctypes: bool, level: int) -> None:
    for payload in _payloads():
        data = gzip.compress(payload, compresslevel=level)
        out = np.empty(len(payload), np.uint8)
        assert inflate_into(data, out, use_ctypes=use_ctypes)
        assert out.tobytes() == payload
        assert out.tobytes() == zlib.decompress(data, 31)


@pytest.mark.parametrize("use_ctypes", PATHS)
def test_small_steps_feed_and_drain_in_pieces(
    monkeypatch: pytest.MonkeyPatch, use_ctypes: bool
) -> None:
    """The 32-bit stepping (files over 4 GiB) exercised with 7-byte steps."""
    monkeypatch.setattr(_zlib, "_STEP", 7)
    monkeypatch.setattr(_zlib, "_CHUNK", 7)
    payload = _payloads()[3][:5000] + _payloads()[4][:20_000]
    out = np.empty(len(payload), np.uint8)
    assert inflate_into(gzip.compress(payload), out, use_ctypes=use_ctypes)
    assert out.tobytes() == payload


@pytest.mark.parametrize("use_ctypes", PATHS)
def test_refuses_what_is_not_exactly_one_intact_member(use_ctypes: bool) -> None:
    payload = _payloads()[4]
    data = gzip.compress(payload)
    n = len(payload)

    def ok(blob: bytes, size: int = n) -> bool:
        return inflate_into(blob, np.empty(size, np.uint8), use_ctypes=use_ctypes)

    assert ok(data)
    assert not ok(data, n - 1)  # the buffer is too small
    assert not ok(data, n + 1)  # the stream ends before the buffer is full
    assert not ok(data[:-9])  # truncated
    assert not ok(data[: len(data) // 2])
    bad_crc = bytearray(data)
    bad_crc[-6] ^= 0xFF
    assert not ok(bytes(bad_crc))
    bad_len = bytearray(data)
    bad_len[-2] ^= 0x01
    assert not ok(bytes(bad_len))
    half = n // 2
    two = gzip.compress(payload[:half]) + gzip.compress(payload[half:])
    assert zlib.decompressobj(31).decompress(two) == payload[:half]
    assert not ok(two)  # several members: left to the caller's fallback
    assert not ok(data + b"\x00junk")  # trailing bytes
    assert not ok(zlib.compress(payload))  # a zlib, not gzip, stream
    assert not ok(b"")
    assert not ok(b"\x1f\x8b" + bytes(30))


def test_ctypes_and_loop_agree_on_random_damage() -> None:
    if not have_ctypes_zlib():
        pytest.skip("no system zlib loadable through ctypes")
    rng = np.random.default_rng(3)
    payload = _payloads()[4][:50_000] + _payloads()[3][:2000]
    data = gzip.compress(payload)
    for _ in range(200):
        blob = bytearray(data)
        for i in rng.integers(0, len(blob), rng.integers(1, 4)):
            blob[i] = int(rng.integers(0, 256))
        a, b = np.empty(len(payload), np.uint8), np.empty(len(payload), np.uint8)
        got_c = inflate_into(bytes(blob), a, use_ctypes=True)
        got_l = inflate_into(bytes(blob), b, use_ctypes=False)
        assert got_c == got_l
        if got_c:  # an intact result is the payload itself
            assert a.tobytes() == b.tobytes() == payload


def test_bad_buffers_are_named() -> None:
    data = gzip.compress(b"abcdef")
    ro = np.zeros(6, np.uint8)
    ro.flags.writeable = False
    for out in (ro, np.zeros(12, np.uint8)[::2], bytearray(6)):
        with pytest.raises(ValueError, match="Expected a C-contiguous writeable numpy buffer"):
            inflate_into(data, out)  # type: ignore[arg-type]


def test_multibyte_buffers_are_filled_bytewise() -> None:
    a = np.arange(1000, dtype=">i4")
    out = np.empty(1000, np.int32)
    assert inflate_into(gzip.compress(a.tobytes()), out)
    assert out.tobytes() == a.tobytes()


def test_without_a_system_zlib_the_loop_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "_load", lambda: None)
    data = gzip.compress(b"abcdef")
    out = np.empty(6, np.uint8)
    assert not have_ctypes_zlib()
    assert inflate_into(data, out) and out.tobytes() == b"abcdef"
    with pytest.raises(RuntimeError, match="No system zlib"):
        inflate_into(data, out, use_ctypes=True)
