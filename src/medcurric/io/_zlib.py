"""Inflate a gzip stream straight into a caller's buffer, through the system's zlib.

Python's :mod:`zlib` returns new ``bytes``: one-call ``zlib.decompress`` grows its
output as it goes (reallocating and copying), and a ``decompressobj`` loop hands
back chunks that must be copied into the final array. Reading a 6 MB label map
that way costs 20-50 % more than the inflate itself. zlib's own ``inflate`` writes
wherever ``next_out`` points, so this module calls it through :mod:`ctypes` with
``next_out`` at the start of a preallocated, writeable numpy buffer: one pass,
no copy. The gzip trailer (CRC-32 and length) is checked by zlib as usual.

Where no zlib library can be loaded (Windows builds of Python link zlib
statically), or the library refuses our ``z_stream`` layout, :func:`inflate_into`
falls back to a ``decompressobj`` loop with the same result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import zlib
from typing import Any

import numpy as np

__all__ = ["inflate_into", "have_ctypes_zlib"]

_Z_OK, _Z_STREAM_END, _Z_NO_FLUSH = 0, 1, 0
#: zlib's ``avail_in``/``avail_out`` are 32-bit: feed and drain in steps below that.
_STEP = 1 << 30
#: Output chunk of the fallback loop (small chunks stay in cache while copied).
_CHUNK = 1 << 16


class _ZStream(ctypes.Structure):
    """``z_stream`` from zlib.h (``uInt`` is ``unsigned int``, ``uLong`` ``unsigned long``)."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


@functools.cache
def _load() -> tuple[Any, bytes] | None:
    """``(library, version)`` of the system zlib, checked once; ``None`` where it does not load."""
    name = ctypes.util.find_library("z")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.zlibVersion.restype = ctypes.c_char_p
        lib.zlibVersion.argtypes = []
        lib.inflateInit2_.restype = ctypes.c_int
        lib.inflateInit2_.argtypes = [
            ctypes.POINTER(_ZStream),
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.inflate.restype = ctypes.c_int
        lib.inflate.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int]
        lib.inflateEnd.restype = ctypes.c_int
        lib.inflateEnd.argtypes = [ctypes.POINTER(_ZStream)]
        version = lib.zlibVersion()
        # inflateInit2_ checks the version's major number and sizeof(z_stream) itself;
        # a quick round trip checks the rest of the layout before the first real file
        probe = np.empty(5, np.uint8)
        loaded = (lib, version)
        if not _ctypes_inflate(loaded, zlib.compress(b"probe", wbits=31), probe):
            return None
        if probe.tobytes() != b"probe":
            return None
        return loaded
    except (OSError, AttributeError):
        return None


def _ctypes_inflate(loaded: tuple[Any, bytes], data: bytes, out: np.ndarray) -> bool:
    lib, version = loaded
    stream = _ZStream()
    ref = ctypes.byref(stream)
    if lib.inflateInit2_(ref, 31, version, ctypes.sizeof(_ZStream)) != _Z_OK:
        return False
    try:
        src = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        dst = out.ctypes.data
        n_in, n_out = len(data), out.nbytes
        stream.next_in, stream.next_out = src, dst  # also for empty data / buffers
        fed = drained = 0
        while True:
            if stream.avail_in == 0 and fed < n_in:
                step = min(_STEP, n_in - fed)
                stream.next_in, stream.avail_in = src + fed, step
                fed += step
            if stream.avail_out == 0 and drained < n_out:
                step = min(_STEP, n_out - drained)
                stream.next_out, stream.avail_out = dst + drained, step
                drained += step
            before = (stream.avail_in, stream.avail_out)
            rc = lib.inflate(ref, _Z_NO_FLUSH)
            if rc == _Z_STREAM_END:
                # exactly the buffer, and nothing after the member (no second member)
                return (
                    stream.avail_in == 0
                    and fed == n_in
                    and stream.avail_out == 0
                    and drained == n_out
                )
            if rc != _Z_OK or before == (stream.avail_in, stream.avail_out):
                return False  # damaged, truncated, or longer than the buffer
    finally:
        lib.inflateEnd(ref)


def _loop_inflate(data: bytes, out: np.ndarray) -> bool:
    inflater = zlib.decompressobj(31)
    flat = out.reshape(-1).view(np.uint8)
    size = flat.shape[0]
    pos = 0
    tail: bytes = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(tail, _CHUNK)
            tail = inflater.unconsumed_tail
            if not chunk:
                if inflater.eof:
                    break  # an empty member
                if not tail:
                    return False  # truncated stream
                continue
            if pos + len(chunk) > size:
                return False  # longer than the buffer
            flat[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            pos += len(chunk)
    except zlib.error:
        return False
    return pos == size and not inflater.unused_data


def have_ctypes_zlib() -> bool:
    """Whether :func:`inflate_into` writes through the system zlib (else the loop)."""
    return _load() is not None


def inflate_into(data: bytes, out: np.ndarray, *, use_ctypes: bool | None = None) -> bool:
    """Inflate the single gzip member ``data`` into ``out``, exactly filling it.

    Args:
        data: A whole gzip stream of one member.
        out: A C-contiguous, writeable buffer of exactly the inflated size.
        use_ctypes: Force (``True``) or avoid (``False``) the system-zlib path; by
            default it is used when it loads.

    Returns:
        ``True`` when the stream was intact (CRC-32 and length checked) and filled
        ``out`` exactly with nothing left over; ``False`` otherwise (damaged,
        truncated, several members, trailing bytes, or a size other than ``out``'s),
        in which case ``out`` holds unspecified bytes.

    Raises:
        ValueError: When ``out`` is not a C-contiguous writeable array.
        RuntimeError: With ``use_ctypes=True`` where no system zlib loads.

    Examples:
        >>> import gzip
        >>> buf = np.empty(5, np.uint8)
        >>> inflate_into(gzip.compress(b"hello"), buf), buf.tobytes()
        (True, b'hello')
    """
    if not (isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(
            f"Expected a C-contiguous writeable numpy buffer, but got {type(out).__name__}"
            + (f" with flags {out.flags!r}" if isinstance(out, np.ndarray) else "")
            + "."
        )
    loaded = _load() if use_ctypes is not False else None
    if loaded is not None:
        return _ctypes_inflate(loaded, bytes(data), out)
    if use_ctypes:
        raise RuntimeError("No system zlib could be loaded through ctypes.")
    return _loop_inflate(bytes(data), out)
