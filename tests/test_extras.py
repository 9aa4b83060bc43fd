"""Optional dependencies: a missing extra is one clear line naming what to install, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from lowlabel import extras, registry

ALL_OPTIONAL = sorted(m for modules in extras.EXTRAS.values() for m in modules)


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing any of `modules` fails as if it were not installed."""
    blocker = f"import sys\nfor _m in {modules!r}:\n    sys.modules[_m] = None\n"
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, timeout=120)


def cli(*argv: str) -> str:
    return f"sys.argv = ['lowlabel', *{list(argv)!r}]\nfrom lowlabel.__main__ import main\nmain()\n"


def test_every_extra_is_declared_in_the_package_and_in_all():
    meta = metadata.metadata("lowlabel")
    assert set(extras.EXTRAS) <= set(meta.get_all("Provides-Extra"))
    (everything,) = [r for r in meta.get_all("Requires-Dist") if r.startswith("lowlabel[") and '"all"' in r]
    assert set(extras.EXTRAS) <= set(everything.split("[", 1)[1].split("]")[0].split(","))


@pytest.mark.parametrize("extra", ["graph", "text"])
def test_demo_without_an_extra_says_which_to_install(extra):
    done = run_without(list(extras.EXTRAS[extra]), cli("demo", "sg_retrieval", "--quick", "--out", "/nonexistent"))
    assert done.returncode == 2, done.stderr
    assert f'pip install "lowlabel[{extra}]"' in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert done.stdout == ""  # refused before any work


def test_train_without_an_extra_says_which_to_install():
    done = run_without(list(extras.EXTRAS["text"]), cli("train", "sg_retrieval", "--out", "/nonexistent"))
    assert done.returncode == 2 and 'pip install "lowlabel[text]"' in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("call", "extra"),
    [
        ("from lowlabel.nn.text import minilm_path; minilm_path()", "text"),
        ("from lowlabel.data.io import read_h5_volume; read_h5_volume('x.h5')", "medical"),
        ("from lowlabel.data.io import read_nifti; read_nifti('x.nii.gz')", "medical"),
        ("from lowlabel.methods.sg_retrieval.index import GraphIndex; GraphIndex('.')", "graph"),
        ("from lowlabel.data.face_embedding import DlibEmbedder; DlibEmbedder()", "face"),
    ],
)
def test_library_calls_name_the_missing_extra(call, extra):
    code = f"from lowlabel.extras import MissingExtraError as M\ntry:\n    {call}\nexcept M as e:\n    print(e)"
    done = run_without(ALL_OPTIONAL, code)
    assert done.returncode == 0, done.stderr
    assert f'pip install "lowlabel[{extra}]"' in done.stdout


def test_ready_methods_import_without_any_extra():
    code = "".join(f"import lowlabel.methods.{m.slug}.recipe\n" for m in registry.ready()) + "print('ok')\n"
    done = run_without(ALL_OPTIONAL, code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_check_passes_when_installed_and_require_rejects_unlisted_modules():
    extras.check(["text"], "this test")  # the dev install has every extra
    with pytest.raises(KeyError):
        extras.require("numpy", "text", "this test")
