"""Shared test fixtures: a CPU runtime, one torch thread, the location of the real data folder, CLI processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowlabel_cli import LowlabelProcesses

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cpu_runtime():
    from lowlabel.engine import runtime as rt

    return rt.init("cpu", seed=0)


@pytest.fixture
def one_torch_thread() -> object:
    """One torch thread for the test (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): tiny networks gain
    nothing from more and a shared CPU makes spinning threads slow; bit-identical resumes of scatter-add code (SGP's
    sparse convolution) need one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip when it is absent (as on a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (see README: where the official files come from)")
    return SHARED_DATA


@pytest.fixture
def lowlabel_processes() -> LowlabelProcesses:
    """`lowlabel` subprocesses for end-to-end and kill-and-resume tests (tests/lowlabel_cli.py)."""
    return LowlabelProcesses()
