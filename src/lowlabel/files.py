"""Atomic file writes: every file lowlabel writes appears whole or not at all.

A write goes to a hidden temporary file beside the target, which is renamed over it only once the write succeeded;
a kill, an exception or a full disk leaves the old file (or none) and no temporary behind. Operating-system
failures (no space left, permission denied, a read-only folder) become a `LowlabelError` naming the file.
No torch import: the CLI and the readers use it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from lowlabel.errors import LowlabelError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (a hidden name ending in `path`'s whole name, so writers that choose a
    format by the ending, e.g. .nii.gz, behave); when the block ends without an error it replaces `path`, otherwise
    it is removed. Parent folders are created."""
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise LowlabelError(f"could not write {path}: {err.strerror or err}") from err
    finally:
        with suppress(OSError):  # e.g. a parent is a file: the error above already names the problem
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, payload: Mapping[str, Any] | list[Any]) -> Path:
    """Write indented JSON atomically (values JSON does not know are written as their str) and return the path."""
    return write_text(path, json.dumps(payload, indent=2, default=str))


def read_text(path: str | Path, what: str = "text file") -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file is a `LowlabelError` naming it and
    `what` it is."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LowlabelError(f"{path}: {what} is unreadable or not UTF-8 text ({err})") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing, unreadable or corrupt file is a `LowlabelError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LowlabelError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LowlabelError(f"{what} {path} is unreadable or corrupt ({err})") from None
