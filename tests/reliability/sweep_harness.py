"""The bad-input sweep's one rule, shared by every sweep file (tests/reliability/test_bad_input_*.py).

A broken input (truncated or corrupt file, wrong shape, NaN/Inf, empty or one-sample class, missing view,
unreadable image, non-UTF-8 name, full disk) must end in a `LowlabelError` whose message names the offending file
or key, or, through the CLI, in exit status 2 with that message and no traceback; and nothing half-written may be
left in the run folder. Anything else is a crash and fails the test.

Every outcome is counted per target; `LOWLABEL_SWEEP_REPORT=FILE pytest -p no:xdist tests/reliability` writes the
counts (docs/reliability.md gives the command and its numbers). `HYPOTHESIS_PROFILE=sweep` tries more examples.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lowlabel.errors import LowlabelError
from lowlabel_cli import run_here

COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
TEMPORARY_MARKERS = (".tmp",)


def _names(needle: str | Path | Iterable[str | Path]) -> list[str]:
    items = [needle] if isinstance(needle, (str, Path)) else list(needle)
    return [Path(n).name if isinstance(n, Path) else n for n in items]


def _crash(target: str, message: str) -> None:
    COUNTS[target]["crash"] += 1
    raise AssertionError(f"{target}: {message}")


def expect_clear_error(target: str, call: Callable[[], object], names: str | Path | Iterable[str | Path],
                       *, valid_ok: bool = False) -> str | None:
    """Run `call`; it must raise a LowlabelError naming one of `names` (a file's name, a key). With `valid_ok` an
    input the sweep could not make invalid (hypothesis sometimes draws a harmless one) may also succeed."""
    COUNTS[target]["tried"] += 1
    try:
        call()
    except LowlabelError as err:
        message = str(err)
        if not any(n in message for n in _names(names)):
            _crash(target, f"error does not name {_names(names)}: {message}")
        COUNTS[target]["clear error"] += 1
        return message
    except Exception as err:  # anything but LowlabelError is what the sweep exists to catch
        _crash(target, f"{type(err).__name__} instead of a clear error: {err}")
    if not valid_ok:
        _crash(target, "broken input was accepted silently")
    COUNTS[target]["accepted (valid)"] += 1
    return None


def expect_cli_error(target: str, args: Sequence[str], names: str | Path | Iterable[str | Path],
                     run_root: Path | None = None) -> str:
    """`lowlabel ARGS` in this process: exit status 2, one message naming one of `names`, no traceback; and, when
    `run_root` is given, no temporary or half-made run folder under it."""
    COUNTS[target]["tried"] += 1
    try:
        code, text = run_here(*args)
    except Exception as exc:
        _crash(target, f"{type(exc).__name__} escaped the CLI: {exc}")
    if code != 2:
        _crash(target, f"exit status {code}, not 2: {text[-500:]}")
    if "Traceback" in text or not any(n in text for n in _names(names)):
        _crash(target, f"message does not name {_names(names)} (or shows a traceback): {text[-500:]}")
    if run_root is not None:
        left = [p for p in run_root.rglob("*") if any(m in p.name for m in TEMPORARY_MARKERS)]
        runs = [p for p in run_root.rglob("run.json")]
        if left or runs:
            _crash(target, f"left behind after the error: {[str(p) for p in left + runs]}")
    COUNTS[target]["clear error"] += 1
    return text
