"""Append-only, resumable JSON-lines files.

A record is written as one complete line and flushed before the next one, so a
run killed at any moment loses nothing already written. When a file ends in a
partial line (the process died mid-write), the partial line is moved to a
``.partial`` side file on open and appending continues after the last complete
line. Readers skip nothing silently: a corrupt complete line raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from medcurric.errors import DataFormatError, MissingFileError, OutputInUseError

try:  # POSIX advisory locks; elsewhere writers are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["JsonlWriter", "read_ids", "read_jsonl"]


def read_jsonl(path: str | os.PathLike[str], *, allow_partial_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON-lines file.

    Args:
        path: The file to read.
        allow_partial_tail: Ignore a final line without newline (an interrupted write).

    Yields:
        One dict per line; blank lines are skipped.

    Raises:
        MissingFileError: When ``path`` does not exist.
        DataFormatError: When a complete line is not a JSON object.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected a JSON-lines file at '{p}', but it does not exist.")
    with p.open("rb") as fh:  # bytes: a tail cut inside a multi-byte character is still a tail
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n") and allow_partial_tail:
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(f"{p}:{number}: expected UTF-8 text ({exc}).") from exc
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DataFormatError(f"{p}:{number}: expected one JSON object per line ({exc}).") from exc
            if not isinstance(obj, dict):
                raise DataFormatError(
                    f"{p}:{number}: expected a JSON object, but got {type(obj).__name__}."
                )
            yield obj


def read_ids(path: str | os.PathLike[str], key: str = "id") -> set[str]:
    """Return the set of ``key`` values already written to ``path`` (empty if absent)."""
    p = Path(path)
    if not p.exists():
        return set()
    return {str(obj[key]) for obj in read_jsonl(p) if key in obj}


def _repair_tail(path: Path) -> None:
    """Move an unterminated last line to ``<path>.partial`` so appends stay line-aligned."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        block = 1 << 16
        pos = size
        cut = 0
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        fh.seek(cut)
        tail = fh.read()
        with open(str(path) + ".partial", "ab") as side:
            side.write(tail + b"\n")
        fh.truncate(cut)


class JsonlWriter:
    """Append records to a JSON-lines file, one flushed line each, skipping known ids.

    Args:
        path: Output file; created with its parent directories if needed.
        key: The field holding each record's stable id.
        fsync: Also ``os.fsync`` after each line (survives power loss, slower).

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
        >>> with JsonlWriter(out) as w:
        ...     w.write({"id": "a", "v": 1})
        True
        >>> with JsonlWriter(out) as w:  # a rerun skips what is already there
        ...     w.write({"id": "a", "v": 1}), w.write({"id": "b", "v": 2})
        (False, True)
        >>> [r["id"] for r in read_jsonl(out)]
        ['a', 'b']
    """

    def __init__(self, path: str | os.PathLike[str], *, key: str = "id", fsync: bool = False) -> None:
        self.path = Path(path)
        self.key = key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
        self.seen: set[str] = read_ids(self.path, key)
        self._fh: TextIO | None = None

    def __enter__(self) -> JsonlWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the file for appending and lock it (done by ``with`` automatically).

        Raises:
            OutputInUseError: When another process holds the file open for writing.
        """
        if self._fh is not None:
            return
        fh = self.path.open("a", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                fh.close()
                raise OutputInUseError(
                    f"'{self.path}' is being written by another process; two writers would duplicate "
                    "records. Wait for it to finish, or write to another file (e.g. with --shard)."
                ) from exc
        # Under the lock: mend a tail another writer may have left, and learn what it wrote.
        _repair_tail(self.path)
        self.seen |= read_ids(self.path, self.key)
        self._fh = fh

    def close(self) -> None:
        """Flush and close the file (releasing its lock)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __contains__(self, record_id: object) -> bool:
        return str(record_id) in self.seen

    def write(self, record: Any) -> bool:
        """Append one record (a dict or an object with ``to_dict``); return False if its id was seen."""
        data = record.to_dict() if hasattr(record, "to_dict") else record
        if not isinstance(data, dict) or self.key not in data:
            raise DataFormatError(f"Expected a record with a {self.key!r} field, but got {data!r:.200}.")
        rid = str(data[self.key])
        if rid in self.seen:
            return False
        if self._fh is None:
            self.open()
        assert self._fh is not None
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escape it as JSON does, losing nothing
            line = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.seen.add(rid)
        return True

    def write_many(self, records: Iterable[Any]) -> int:
        """Append several records; return how many were new."""
        return sum(self.write(r) for r in records)
