from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from medcurric._jsonl import JsonlWriter, read_ids, read_jsonl
from medcurric._paths import safe_join
from medcurric.errors import DataFormatError, UnsafePathError


def test_partial_tail_is_moved_aside_and_appending_resumes(tmp_path) -> None:
    out = tmp_path / "x.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b", "trunc')
    with JsonlWriter(out) as w:
        assert "a" in w and "b" not in w
        assert w.write({"id": "b"})
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]
    assert (tmp_path / "x.jsonl.partial").read_text().startswith('{"id": "b", "trunc')


def test_corrupt_complete_line_raises(tmp_path) -> None:
    out = tmp_path / "x.jsonl"
    out.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(DataFormatError, match=":2:"):
        list(read_jsonl(out))


def test_killed_writer_loses_no_complete_line(tmp_path) -> None:
    out = tmp_path / "k.jsonl"
    code = textwrap.dedent(
        f"""
        import os, signal
        from medcurric._jsonl import JsonlWriter
        w = JsonlWriter({str(out)!r}); w.open()
        for i in range(50):
            w.write({{"id": str(i), "pad": "x" * 1000}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode != 0
    assert read_ids(out) == {str(i) for i in range(50)}
    lines = out.read_text().splitlines()
    assert all(json.loads(line) for line in lines)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "a\x00b"])
def test_safe_join_rejects_escapes(tmp_path, bad) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)


def test_safe_join_rejects_symlink_escape(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link/secret")
    assert safe_join(root, "a/b.png") == (root / "a" / "b.png").resolve()
