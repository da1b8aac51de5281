"""The one-pass gzip reader of read_nifti_labels against nibabel's own reading."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcurric.io import nifti
from medcurric.io.nifti import _inflate_gzip_nifti, read_nifti_labels, write_nifti

NAMES = {1: "liver", 2: "spleen", 3: "kidney_left", 4: "aorta"}
AFFINES = [
    np.diag([-1.5, -1.5, 3.0, 1.0]),
    np.diag([1.0, 2.0, 3.0, 1.0]),  # x and y flipped on reading
    np.array([[0, 0, 2, 1], [0, -1, 0, 2], [1, 0, 0, 3], [0, 0, 0, 1.0]]),  # axes permuted
]


def _via_nibabel(path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> object:
    with monkeypatch.context() as m:
        m.setattr(nifti, "_inflate_gzip_nifti", lambda p: None)
        return read_nifti_labels(path, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("which", range(len(AFFINES)))
@pytest.mark.parametrize("names", [True, False])
def test_fast_path_equals_nibabel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: type, which: int, names: bool
) -> None:
    rng = np.random.default_rng(which)
    a = rng.integers(0, 5, (5, 7, 16)).astype(dtype)
    f = tmp_path / "seg.nii.gz"
    write_nifti(a, f, affine=AFFINES[which], label_names=NAMES if names else None)
    fast = _inflate_gzip_nifti(f)
    assert fast is not None
    header, data = fast
    img = nib.load(str(f))
    np.testing.assert_array_equal(data, np.asanyarray(img.dataobj))
    assert data.dtype == img.get_data_dtype()
    np.testing.assert_allclose(header.get_best_affine(), img.affine)
    got, ref = read_nifti_labels(f), _via_nibabel(f, monkeypatch)
    np.testing.assert_array_equal(got.array, ref.array)
    assert got.array.dtype == ref.array.dtype
    assert got.array.flags.writeable
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert got.spacing == ref.spacing and got.class_map == ref.class_map


def test_falls_back_for_what_it_does_not_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = np.arange(5 * 6 * 8, dtype=np.int16).reshape(5, 6, 8) % 7
    f = tmp_path / "seg.nii.gz"
    write_nifti(a, f)
    raw = f.read_bytes()
    # two gzip members (valid gzip, nibabel reads it): not the fast path, same result
    body = gzip.decompress(raw)
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(body[:1000]) + gzip.compress(body[1000:]))
    assert _inflate_gzip_nifti(two) is None
    np.testing.assert_array_equal(read_nifti_labels(two).array, read_nifti_labels(f).array)
    # scaled data goes through nibabel's scaling
    hdr = bytearray(body)
    hdr[112:116] = np.array([2.0], dtype="<f4").tobytes()  # scl_slope = 2
    scaled = tmp_path / "scaled.nii.gz"
    scaled.write_bytes(gzip.compress(bytes(hdr)))
    assert nib.load(str(scaled)).dataobj.slope == 2.0
    assert _inflate_gzip_nifti(scaled) is None
    got = read_nifti_labels(scaled).array  # nibabel scales: 2 * labels, as float -> int32
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, 2 * read_nifti_labels(f).array.astype(np.int32))
    # a damaged stream (CRC) is left to nibabel
    bad = bytearray(raw)
    bad[-6] ^= 0xFF
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(bytes(bad))
    assert _inflate_gzip_nifti(damaged) is None
    # an uncompressed file never takes it
    plain = tmp_path / "seg.nii"
    write_nifti(a, plain)
    assert _inflate_gzip_nifti(plain) is None


def test_big_endian_header_with_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vox_offset is read from the header bytes in the file's own byte order."""
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 5, (16, 7, 5)).astype(">i2")  # (i, j, k) as stored
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(">i2")
    img = nib.Nifti1Image(stored, AFFINES[2], header=hdr)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, nifti._label_extension_xml(NAMES)))
    f = tmp_path / "be.nii.gz"
    nib.save(img, str(f))
    assert nib.load(str(f)).header.endianness == ">"
    fast = _inflate_gzip_nifti(f)
    assert fast is not None
    np.testing.assert_array_equal(fast[1], np.asanyarray(nib.load(str(f)).dataobj))
    got, ref = read_nifti_labels(f), _via_nibabel(f, monkeypatch)
    np.testing.assert_array_equal(got.array, ref.array)
    assert got.class_map == ref.class_map and got.class_map.name_of(4) == "aorta"


def test_vox_offset_past_the_end_is_left_to_nibabel(tmp_path: Path) -> None:
    f = tmp_path / "seg.nii.gz"
    write_nifti(np.zeros((2, 3, 8), np.uint8), f)
    body = bytearray(gzip.decompress(f.read_bytes()))
    body[108:112] = np.array([len(body) + 16], dtype="<f4").tobytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(bytes(body)))
    assert _inflate_gzip_nifti(bad) is None


def test_parsed_label_names_are_not_shared(tmp_path: Path) -> None:
    """Names are parsed once per distinct extension; each caller gets its own dict."""
    content = nifti._label_extension_xml(NAMES)
    first = nifti._parse_label_extension(content)
    assert first == NAMES
    first[99] = "changed"
    assert nifti._parse_label_extension(content) == NAMES


def test_a_trailer_claiming_gigabytes_is_left_to_nibabel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An impossible ISIZE (beyond deflate's 1032:1) reserves nothing and falls back."""
    f = tmp_path / "seg.nii.gz"
    write_nifti(np.ones((2, 3, 8), np.uint8), f)
    raw = bytearray(f.read_bytes())
    raw[-4:] = (2**32 - 1).to_bytes(4, "little")
    bad = tmp_path / "big.nii.gz"
    bad.write_bytes(bytes(raw))
    assert nifti._MAX_DEFLATE_RATIO * len(raw) < 2**32 - 1
    reserved: list[int] = []
    real_empty = np.empty

    def spy(shape: object, *args: object, **kw: object) -> np.ndarray:
        reserved.append(int(np.prod(shape)))  # type: ignore[call-overload]
        return real_empty(shape, *args, **kw)  # type: ignore[call-overload]

    with monkeypatch.context() as m:
        m.setattr(nifti.np, "empty", spy)
        assert _inflate_gzip_nifti(bad) is None
    assert not reserved or max(reserved) < 2**20
