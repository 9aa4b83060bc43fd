"""Running the `lowlabel` command from tests: in this process (`run_here`, no second torch start-up) or as real
subprocesses (`LowlabelProcesses`, for kills). tests/ is on sys.path (the conftest's folder), so any test imports it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def run_here(*args: object) -> tuple[int, str]:
    """`lowlabel ARGS` in this process through the real entry point (`cli.run`: user errors exit 2 with one line):
    (exit status, stdout + stderr). sys.argv and torch's thread count are restored."""
    import torch

    from lowlabel import cli

    out, threads = io.StringIO(), torch.get_num_threads()
    argv, sys.argv = sys.argv, ["lowlabel", *map(str, args)]
    code: object = 0
    try:
        with redirect_stdout(out), redirect_stderr(out):
            cli.run()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return int(code or 0), out.getvalue()


def run_here_ok(*args: object) -> str:
    """`run_here` that must exit 0; returns the output."""
    code, text = run_here(*args)
    assert code == 0, text
    return text


class LowlabelProcesses:
    """`lowlabel` as a real subprocess, for end-to-end and kill-and-resume tests (one torch thread each)."""

    def start(self, *args: object, cwd: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lowlabel", *map(str, args)], cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    def finish(self, proc: subprocess.Popen, timeout: float = 240) -> str:
        """Wait for `proc`; it must exit 0. Returns its output."""
        output, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, output
        return output

    def run(self, *args: object, cwd: Path, timeout: float = 240) -> str:
        return self.finish(self.start(*args, cwd=cwd), timeout)

    @staticmethod
    def only_run(root: Path, slug: str) -> Path:
        """The single run folder under `root/slug`."""
        (run,) = (root / slug).iterdir()
        return run

    def kill_after_checkpoint(self, proc: subprocess.Popen, root: Path, slug: str, steps: int,
                              timeout: float = 180) -> Path:
        """SIGKILL training run `proc` (writing under `root`) as soon as its first checkpoint exists; checks that it
        died before step `steps` and wrote no summary. Returns its run folder."""
        deadline = time.monotonic() + timeout
        while not list(root.glob(f"{slug}/*/checkpoints/step_*.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run = self.only_run(root, slug)
        written = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
        assert written and written[-1] < steps, written  # killed mid-run
        assert not (run / "summary.json").exists()
        return run

    def kill_and_resume(self, command: Sequence[object], args: Sequence[object], *, slug: str, steps: int, cwd: Path,
                        timeout: float = 180, before_resume: Callable[[], object] | None = None) -> tuple[Path, dict]:
        """`lowlabel COMMAND ARGS` twice as subprocesses for `steps` steps: once uninterrupted (--out cwd/whole), once
        SIGKILLed after its first checkpoint (--out cwd/killed) and continued with `lowlabel COMMAND --resume RUN`
        (after the uninterrupted run has ended and `before_resume` has run); the two final model states must be equal.
        Returns (the resumed run folder, its final model state)."""
        whole = self.start(*command, *args, "--out", "whole", cwd=cwd)
        run = self.kill_after_checkpoint(self.start(*command, *args, "--out", "killed", cwd=cwd), cwd / "killed", slug,
                                         steps, timeout=timeout)
        self.finish(whole)
        if before_resume is not None:
            before_resume()
        self.run(*command, "--resume", run, "--threads", 1, "--device", "cpu", cwd=cwd)
        return run, self.assert_same_weights(self.only_run(cwd / "whole", slug), run, steps)

    @staticmethod
    def assert_same_weights(run_a: Path, run_b: Path, step: int) -> dict:
        """The model states of step `step` in two run folders are equal tensor by tensor; returns one of them."""
        import torch

        from lowlabel.engine import checkpoint

        name = f"step_{step:08d}.pt"
        a = checkpoint.load(run_a / "checkpoints" / name)["model"]
        b = checkpoint.load(run_b / "checkpoints" / name)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        return a
