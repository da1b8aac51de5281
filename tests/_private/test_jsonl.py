from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from medcurric._jsonl import JsonlWriter, read_ids, read_jsonl
from medcurric._paths import safe_join
from medcurric.errors import DataFormatError, OutputInUseError, UnsafePathError


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


def test_a_lone_surrogate_is_written_escaped_and_reads_back(tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    with JsonlWriter(out) as w:
        assert w.write({"id": "a", "text": "reply \ud800 end"})
        assert w.write({"id": "b", "text": "ünïcode stays as is"})
    rows = list(read_jsonl(out))
    assert rows[0]["text"] == "reply \ud800 end" and rows[1]["text"] == "ünïcode stays as is"
    assert "ünïcode" in out.read_text(encoding="utf-8")  # plain text is not escaped


def test_a_tail_cut_inside_a_multibyte_character_is_a_partial_tail(tmp_path) -> None:
    out = tmp_path / "t.jsonl"
    whole = b'{"id":"a","t":"x"}\n' + '{"id":"b","t":"é"}'.encode()
    out.write_bytes(whole[:-3])  # ends inside the two-byte "é"
    assert [r["id"] for r in read_jsonl(out)] == ["a"]
    with JsonlWriter(out) as w:  # the writer repairs the same file and appends after "a"
        assert w.write({"id": "b", "t": "é"})
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]


def test_a_deeply_nested_line_is_a_data_format_error(tmp_path) -> None:
    out = tmp_path / "n.jsonl"
    out.write_text("[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(DataFormatError, match=":1:"):
        list(read_jsonl(out))


def test_a_second_process_writing_the_same_file_is_refused(tmp_path) -> None:
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "busy.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from medcurric._jsonl import JsonlWriter
            with JsonlWriter({str(out)!r}) as w:
                w.write({{"id": "child"}})
                print("locked", flush=True)
                sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUseError, match="another process"):
            with JsonlWriter(out) as w:
                w.write({"id": "parent"})
    finally:
        child.communicate("go\n", timeout=60)
    with JsonlWriter(out) as w:  # free again once the other writer closed; it sees the child's record
        assert "child" in w and w.write({"id": "parent"})
    assert [r["id"] for r in read_jsonl(out)] == ["child", "parent"]
