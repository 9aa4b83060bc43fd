"""Reading a MATLAB .mat file so that no file, however broken, can take the process down.

scipy's MAT v5 reader is partly compiled code that trusts the file: one corrupt byte (an unknown data-type code in an
element tag) makes `scipy.io.loadmat` (1.17) die with a segmentation fault, which no `except` can catch. So the file
is parsed in a forked child process that sends the arrays back through a pipe; a child that dies is reported as a
corrupt file. Where fork is not available (Windows, macOS' default), the file is read in this process.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lowlabel.errors import LowlabelError


def _read(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as err:  # scipy raises many types for a truncated file, or one that is not MATLAB v5/v7
        raise LowlabelError(f"{path} is not a MATLAB .mat file scipy can read (truncated, corrupt, or v7.3/HDF5: "
                            f"save it with -v7): {str(err)[:200]}") from None


def _child(path: Path, conn: Connection) -> None:
    faulthandler.disable()  # a crash here is expected and reported by the parent; no traceback dump on stderr
    try:
        conn.send(("ok", _read(path)))
    except Exception as err:  # everything goes back to the parent as a message
        conn.send(("error", str(err) if isinstance(err, LowlabelError) else f"{path}: {type(err).__name__}: {err}"))
    finally:
        conn.close()


def read_mat(path: Path) -> dict[str, Any]:
    """The variables of the .mat file at `path` (as `scipy.io.loadmat` returns them), parsed in a forked child;
    a file scipy cannot read, or that crashes it, is a LowlabelError naming the file."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return _read(path)
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(path, send), daemon=True)
    child.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:  # the child died before answering
        child.join()
        raise LowlabelError(f"{path} is corrupt: reading it crashed the MAT-file parser (exit code {child.exitcode}); "
                            "write the file again") from None
    finally:
        receive.close()
    child.join()
    if status != "ok":
        raise LowlabelError(payload)
    return payload
