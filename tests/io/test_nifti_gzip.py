"""The gzip NIfTI reader against nibabel, stdlib gzip/zlib, damaged and hostile streams."""

from __future__ import annotations

import gzip
import itertools
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from medcurric.errors import DataFormatError
from medcurric.io import nifti
from medcurric.io.nifti import (
    _GzipStream,
    _inflate_gzip_nifti,
    read_nifti,
    read_nifti_labels,
    write_nifti,
)

NAMES = {1: "liver", 2: "spleen", 3: "kidney_left", 4: "aorta"}
AFFINES = [
    np.diag([-1.5, -1.5, 3.0, 1.0]),
    np.diag([1.0, 2.0, 3.0, 1.0]),  # x and y flipped on reading
    np.array([[0, 0, 2, 1], [0, -1, 0, 2], [1, 0, 0, 3], [0, 0, 0, 1.0]]),  # axes permuted
]
LIBS = [pytest.param(zlib, id="zlib"), pytest.param(nifti._inflater(), id="chosen")]


def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300_000).astype(np.uint8)
    labels.sort()  # long runs, like a label map
    return [
        b"",
        b"x",
        rng.integers(0, 256, 70_000, dtype=np.uint8).tobytes(),  # incompressible
        labels.tobytes(),
        np.repeat(np.arange(50, dtype=np.int16), 4000).tobytes(),
    ]


def _read_all(blob: bytes, size: int, lib: Any) -> bytes:
    """Exactly ``size`` bytes through _GzipStream, refusing a stream that holds more."""
    stream = _GzipStream(blob, Path("blob.gz"), lib)
    out = bytearray(size)
    got = stream.readinto(memoryview(out))
    if got != size or stream.read(1):
        raise DataFormatError("size")
    return bytes(out)


def test_isal_is_chosen_and_zlib_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")  # in the io extra
    assert nifti._inflater() is isal_zlib
    nifti._inflater.cache_clear()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "isal", None)  # as if not installed
        assert nifti._inflater() is zlib
        nifti._inflater.cache_clear()
    assert nifti._inflater() is isal_zlib


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("level", [1, 9])
def test_stream_equals_gzip(lib: Any, level: int) -> None:
    for payload in _payloads():
        data = gzip.compress(payload, compresslevel=level)
        assert _read_all(data, len(payload), lib) == payload == gzip.decompress(data)


@pytest.mark.parametrize("lib", LIBS)
def test_small_steps_and_several_members(monkeypatch: pytest.MonkeyPatch, lib: Any) -> None:
    """7-byte feeds and drains; members (and zero padding) read on as gzip reads them."""
    monkeypatch.setattr(nifti, "_IN_STEP", 7)
    monkeypatch.setattr(nifti, "_OUT_STEP", 7)
    payload = _payloads()[2][:5000] + _payloads()[3][:20_000]
    cut = [0, 3000, 3001, 11_000, len(payload)]
    members = [gzip.compress(payload[a:b]) for a, b in itertools.pairwise(cut)]
    for blob in (
        members[0],
        b"".join(members),
        b"".join(members) + bytes(20),
        members[0] + bytes(5) + b"".join(members[1:]),
    ):
        size = len(gzip.decompress(blob))
        assert _read_all(blob, size, lib) == gzip.decompress(blob)


@pytest.mark.parametrize("lib", LIBS)
def test_refuses_what_gzip_refuses_and_what_is_longer(lib: Any) -> None:
    payload = _payloads()[3]
    data = gzip.compress(payload)
    n = len(payload)

    def refused(blob: bytes, size: int = n) -> bool:
        try:
            _read_all(blob, size, lib)
        except DataFormatError:
            return True
        return False

    assert not refused(data)
    assert refused(data, n - 1)  # holds more than asked for
    assert refused(data, n + 1)  # holds less
    for cut in (len(data) - 1, len(data) - 9, len(data) // 2, 10, 1):
        assert refused(data[:cut])  # truncated
        with pytest.raises((EOFError, gzip.BadGzipFile)):
            gzip.decompress(data[:cut])
    bad_crc = bytearray(data)
    bad_crc[-6] ^= 0xFF
    bad_len = bytearray(data)
    bad_len[-2] ^= 0x01
    for blob in (bytes(bad_crc), bytes(bad_len), data + b"junk", zlib.compress(payload)):
        assert refused(blob)
        with pytest.raises((gzip.BadGzipFile, zlib.error)):
            gzip.decompress(blob)


@pytest.mark.parametrize("lib", LIBS)
def test_random_damage_agrees_with_gzip(lib: Any) -> None:
    """Damage past the fixed gzip header: accepted exactly when gzip accepts it unchanged."""
    rng = np.random.default_rng(3)
    payload = _payloads()[3][:50_000] + _payloads()[2][:2000]
    data = gzip.compress(payload)
    for _ in range(200):
        blob = bytearray(data)
        for i in rng.integers(10, len(blob), rng.integers(1, 4)):
            blob[i] = int(rng.integers(0, 256))
        try:
            ref: bytes | None = gzip.decompress(bytes(blob))
        except (OSError, EOFError, zlib.error):
            ref = None
        try:
            got: bytes | None = _read_all(bytes(blob), len(payload), lib)
        except DataFormatError:
            got = None
        assert got == (ref if ref is not None and len(ref) == len(payload) else None)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("which", range(len(AFFINES)))
def test_reader_equals_nibabel(tmp_path: Path, lib: Any, dtype: type, which: int) -> None:
    rng = np.random.default_rng(which)
    a = rng.integers(0, 5, (5, 7, 16)).astype(dtype)
    gz, plain = tmp_path / "seg.nii.gz", tmp_path / "seg.nii"
    for f in (gz, plain):
        write_nifti(a, f, affine=AFFINES[which], label_names=NAMES if which else None)
    header, data = _inflate_gzip_nifti(gz, lib)
    img = nib.load(str(gz))
    np.testing.assert_array_equal(data, np.asanyarray(img.dataobj))
    assert data.dtype == img.get_data_dtype() and data.flags.writeable
    with gzip.open(gz) as fh:  # nibabel's header class reading through stdlib gzip
        ref_header = type(header).from_fileobj(fh)
    assert header.binaryblock == ref_header.binaryblock
    assert [e.get_content() for e in header.extensions] == [
        e.get_content() for e in ref_header.extensions
    ]
    got, ref = read_nifti_labels(gz), read_nifti_labels(plain)  # plain: nibabel's proxy
    np.testing.assert_array_equal(got.array, ref.array)
    assert got.array.dtype == ref.array.dtype and got.array.flags.writeable
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert got.spacing == ref.spacing and got.class_map == ref.class_map


def test_big_endian_nifti2_and_scaled_files_equal_nibabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    stored = rng.integers(-1000, 1000, (16, 7, 5)).astype(">i2")  # (i, j, k) as stored
    for kind, image in ((nib.Nifti1Header, nib.Nifti1Image), (nib.Nifti2Header, nib.Nifti2Image)):
        hdr = kind(endianness=">")
        hdr.set_data_dtype(">i2")
        img = image(stored, AFFINES[2], header=hdr)
        img.header.extensions.append(
            nib.nifti1.Nifti1Extension(0, nifti._label_extension_xml(NAMES))
        )
        img.header.set_slope_inter(0.5, -1024.0)
        f = tmp_path / f"be{kind.__name__}.nii.gz"
        nib.save(img, str(f))
        back = nib.load(str(f))
        assert back.header.endianness == ">" and type(back.header) is kind
        header, data = _inflate_gzip_nifti(f)
        assert type(header) is kind
        np.testing.assert_array_equal(data, stored)
        vol = read_nifti(f)
        lazy, r = nifti._load(f)  # nibabel's own proxy scales the data
        np.testing.assert_array_equal(vol.array, r.apply(np.asarray(lazy.dataobj, np.float32)))
        assert vol.array.min() < -1000  # scaled: 0.5 * stored - 1024
        assert nifti.label_names_from_nifti(f) == NAMES


def test_scaled_labels_are_scaled_as_nibabel_scales_them(tmp_path: Path) -> None:
    a = np.arange(5 * 6 * 8, dtype=np.int16).reshape(5, 6, 8) % 7
    f = tmp_path / "seg.nii.gz"
    write_nifti(a, f)
    body = bytearray(gzip.decompress(f.read_bytes()))
    body[112:116] = np.array([2.0], dtype="<f4").tobytes()  # scl_slope = 2
    scaled = tmp_path / "scaled.nii.gz"
    scaled.write_bytes(gzip.compress(bytes(body)))
    got = read_nifti_labels(scaled).array
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, 2 * read_nifti_labels(f).array.astype(np.int32))


def _damaged(tmp_path: Path) -> dict[str, Path]:
    f = tmp_path / "seg.nii.gz"
    write_nifti(np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8), f, label_names=NAMES)
    raw = f.read_bytes()
    body = gzip.decompress(raw)
    out: dict[str, Path] = {}

    def put(name: str, blob: bytes) -> None:
        out[name] = tmp_path / f"{name}.nii.gz"
        out[name].write_bytes(blob)

    for cut in (len(raw) - 1, len(raw) - 8, len(raw) // 2, 30):
        put(f"truncated{cut}", raw[:cut])
    put("junk", raw + b"junk")
    put("longer", gzip.compress(body + b"\x00"))
    put("shorter", gzip.compress(body[:-1]))
    bad = bytearray(raw)
    bad[-6] ^= 0xFF
    put("crc", bytes(bad))
    put("not_nifti", gzip.compress(b"hello" * 200))
    past = bytearray(body)
    past[108:112] = np.array([len(body) + 16], dtype="<f4").tobytes()  # vox_offset
    put("vox_offset_past_end", gzip.compress(bytes(past)))
    short = bytearray(body)
    short[108:112] = np.array([100], dtype="<f4").tobytes()
    put("vox_offset_in_header", gzip.compress(bytes(short)))
    return out


@pytest.mark.parametrize("reader", [read_nifti_labels, read_nifti, nifti.read_nifti_slices])
def test_damaged_files_raise_data_format_error_naming_the_file(tmp_path: Path, reader: Any) -> None:
    for name, f in _damaged(tmp_path).items():
        args = (f, [0]) if reader is nifti.read_nifti_slices else (f,)
        with pytest.raises(DataFormatError, match=f"{name}.nii.gz"):
            reader(*args)


def test_trailing_zeros_are_read_as_gzip_reads_them(tmp_path: Path) -> None:
    f = tmp_path / "seg.nii.gz"
    a = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8)
    write_nifti(a, f)
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(f.read_bytes() + bytes(64))
    assert gzip.decompress(padded.read_bytes()) == gzip.decompress(f.read_bytes())
    np.testing.assert_array_equal(read_nifti_labels(padded).array, a)


def test_declared_size_over_the_cap_is_refused_before_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "seg.nii.gz"
    write_nifti(np.ones((2, 3, 8), np.uint8), f)
    body = bytearray(gzip.decompress(f.read_bytes()))
    body[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], dtype="<i2").tobytes()
    huge = tmp_path / "huge.nii.gz"
    huge.write_bytes(gzip.compress(bytes(body)))
    assert 30000**3 > nifti.MAX_DECLARED_BYTES
    reserved: list[int] = []
    real_empty = np.empty

    def spy(shape: Any, *args: Any, **kw: Any) -> np.ndarray:
        reserved.append(int(np.prod(shape)))
        return real_empty(shape, *args, **kw)  # type: ignore[no-any-return]

    with monkeypatch.context() as m:
        m.setattr(nifti.np, "empty", spy)
        with pytest.raises(DataFormatError, match="MAX_DECLARED_BYTES") as info:
            read_nifti_labels(huge)
    assert "huge.nii.gz" in str(info.value) and not reserved
    monkeypatch.setattr(nifti, "MAX_DECLARED_BYTES", 352 + 47)  # one byte short of 48 voxels
    with pytest.raises(DataFormatError, match="MAX_DECLARED_BYTES"):
        read_nifti_labels(f)


def _bomb(path: Path, shape: tuple[int, ...], gigabytes: float) -> int:
    """A NIfTI declaring ``shape`` uint8 voxels, then ``gigabytes`` of zeros, compressed
    streaming (a few MB on disk)."""
    count = int(np.prod(shape))
    img = nib.Nifti1Image((np.arange(count) % 7).astype(np.uint8).reshape(shape), np.eye(4))
    img.header["vox_offset"] = 352
    body = img.header.binaryblock + bytes(4) + img.get_fdata().astype(np.uint8).tobytes("F")
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with path.open("wb") as fh:
        fh.write(packer.compress(body))
        for _ in range(int(gigabytes * 1024)):
            fh.write(packer.compress(zeros))
        fh.write(packer.flush())
    return path.stat().st_size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
@pytest.mark.parametrize("shape", [(4, 3, 2), (64, 64, 64)])
def test_a_decompression_bomb_is_refused_in_bounded_memory(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    """~1 GiB of zeros behind a small declared size: refused under an address-space limit
    that the same stream inflated whole (stdlib zlib) does not fit in. The small shape is
    caught with the header, the larger one after its data."""
    f = tmp_path / "bomb.nii.gz"
    assert _bomb(f, shape, 1.0) < 8 << 20
    script = textwrap.dedent(
        f"""
        import resource, zlib
        from pathlib import Path
        from medcurric.errors import DataFormatError
        from medcurric.io import nifti
        nifti._inflater()
        vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status")
                  if x.startswith("VmSize"))
        limit = vm + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        raw = Path({str(f)!r}).read_bytes()
        try:
            nifti.read_nifti_labels({str(f)!r})
        except DataFormatError as exc:
            print("refused:", exc)
        try:
            zlib.decompress(raw, 31)
        except MemoryError:
            print("whole inflate: MemoryError")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout and "holds more" in run.stdout and "bomb.nii.gz" in run.stdout
    assert "whole inflate: MemoryError" in run.stdout  # the limit does bite


def test_parsed_label_names_are_not_shared() -> None:
    """Names are parsed once per distinct extension; each caller gets its own dict."""
    content = nifti._label_extension_xml(NAMES)
    first = nifti._parse_label_extension(content)
    assert first == NAMES
    assert first is not None
    first[99] = "changed"
    assert nifti._parse_label_extension(content) == NAMES
