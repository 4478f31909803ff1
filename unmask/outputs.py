"""Output files that lose nothing: a path is checked before any work is done, a file's content is
written to a hidden sibling and renamed into place only once it is complete (so an old file is
never emptied by a run that fails), and records stream to disk as they are measured.

A device or a pipe (/dev/stdout, /dev/full) is written in place: it cannot be renamed onto. A
failed write raises OSError naming the path, which the CLI prints as one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO


class OutputError(ValueError):
    """An output path that cannot be written; the message names it and why."""


def check_output(path: str | os.PathLike | None, what: str) -> None:
    """Refuse, before any work, a path that cannot be written: a directory, a missing parent, no
    write permission. Nothing is created or truncated."""
    if path is None:
        return
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a directory, not a file")
    parent = p.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: no such directory {parent}")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise OutputError(f"{what} {path}: not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: cannot create files in {parent}")


def _in_place(p: Path) -> bool:
    return p.exists() and not p.is_file()


def _tmp(p: Path) -> Path:
    return p.with_name(f".{p.name}.{os.getpid()}.tmp")


def _reraise(e: OSError, path: str | os.PathLike) -> None:
    raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` whole: into a sibling first, then renamed over `path`."""
    p = Path(path)
    target = p if _in_place(p) else _tmp(p)
    try:
        with open(target, "wb") as f:
            f.write(data)
        if target is not p:
            os.replace(target, p)
    except OSError as e:
        if target is not p:
            target.unlink(missing_ok=True)
        _reraise(e, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def check_plot(path: str | os.PathLike | None, what: str = "--plot") -> None:
    """check_output, and the file type must be one matplotlib writes (named by the suffix)."""
    if path is None:
        return
    check_output(path, what)
    from matplotlib.figure import Figure

    kinds = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in kinds:
        raise OutputError(
            f"{what} {path}: cannot draw a {suffix or 'suffix-less'} file; use one of "
            f"{', '.join(sorted(kinds))}"
        )


def save_figure(fig, path: str | os.PathLike) -> None:
    """Render `fig` in memory, then write it whole (savefig alone reports success on a full
    disk)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower() or "png")
    write_bytes(path, buf.getvalue())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


class RecordStream:
    """JSON lines written (and flushed) one by one into a sibling of `path`, renamed over `path`
    by `commit()`. `abort()` leaves `path` as it was; the records measured so far stay in the
    sibling, whose path it returns (None when there were none). `path=None` keeps nothing."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else Path(path)
        self.count = 0
        self._file: BinaryIO | None = None
        if self.path is not None:
            self._target = self.path if _in_place(self.path) else _tmp(self.path)
            try:
                self._file = open(self._target, "wb")
            except OSError as e:
                _reraise(e, self.path)

    def write(self, record: dict) -> None:
        self.count += 1
        if self._file is None:
            return
        try:
            self._file.write((json.dumps(record) + "\n").encode("utf-8"))
            self._file.flush()
        except OSError as e:
            _reraise(e, self.path)

    def _close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError as e:
                _reraise(e, self.path)

    def commit(self) -> None:
        if self.path is None:
            return
        self._close()
        if self._target is not self.path:
            try:
                os.replace(self._target, self.path)
            except OSError as e:
                _reraise(e, self.path)

    def abort(self) -> Path | None:
        if self.path is None:
            return None
        try:
            self._close()
        except OSError:
            pass
        if self._target is self.path:
            return None
        if self.count == 0:
            self._target.unlink(missing_ok=True)
            return None
        return self._target
