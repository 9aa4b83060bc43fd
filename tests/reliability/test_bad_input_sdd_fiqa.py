"""Bad input to SDD-FIQA's readers and `lowlabel fiqa` commands: each ends in one clear error naming the file (exit
status 2 through the CLI) and leaves nothing half-written (sweep_harness.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.sdd_fiqa.data import read_embeddings, read_identity_folders, read_labels


class _MeanStd(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def _people(root: Path, n_ids: int = 5, per_id: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for k in range(n_ids):
        (root / f"guest {k}").mkdir(parents=True)
        for j in range(per_id):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"guest {k}" / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def recogniser(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "mean_std.pt"
    torch.jit.script(_MeanStd()).save(str(path))
    return path


def _label(root: Path, recogniser: Path, *extra: object) -> list[str]:
    return ["fiqa", "label", str(root), "--recognizer", str(recogniser), "--size", "8", "--repeats", "1",
            "--out", str(root.parent / "labels.csv"), *map(str, extra)]


@given(st.binary(max_size=300), st.sampled_from(["a.jpg", "b c.png", "d.webp"]))
def test_label_with_an_unreadable_image(tmp_path_factory, recogniser, content, name):
    root = _people(tmp_path_factory.mktemp("corrupt") / "people")
    (root / "guest 2" / name).write_bytes(content)
    expect_cli_error("fiqa label: unreadable image", _label(root, recogniser), name)
    assert not (root.parent / "labels.csv").exists()


@given(st.sampled_from(["empty", "single"]), st.integers(0, 4))
def test_label_with_empty_or_one_image_identities(tmp_path_factory, recogniser, kind, k):
    root = _people(tmp_path_factory.mktemp("ids") / "people")
    for p in (root / f"guest {k}").iterdir():
        if kind == "empty" or p.name != "0.png":
            p.unlink()
    expect_cli_error(f"fiqa label: {kind} identity", _label(root, recogniser), f"guest {k}")


@given(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and min(b) >= 0x20 and 0x7F not in b))
def test_non_utf8_names_are_kept_or_named(tmp_path_factory, recogniser, raw):
    root = _people(tmp_path_factory.mktemp("names") / "people")
    name = os.fsdecode(b"\xff" + raw + b".png")  # never valid UTF-8; printable (the terminal drops control bytes)
    (root / "guest 1" / name).write_bytes(b"not an image")
    expect_cli_error("fiqa label: non-UTF-8 name", _label(root, recogniser), name)
    (root / "guest 1" / name).write_bytes((root / "guest 1" / "0.png").read_bytes())
    from lowlabel import cli

    argv = os.sys.argv
    os.sys.argv = ["lowlabel", *_label(root, recogniser)]
    try:
        cli.run()
    except SystemExit as done:
        assert done.code in (0, None)
    finally:
        os.sys.argv = argv
    paths, _ = read_labels(root.parent / "labels.csv")
    assert Path("guest 1") / name in paths  # the bytes of the name come back unchanged


@given(st.sampled_from(["cut", "text", "header", "inf", "empty", "no-path"]))
def test_train_on_a_broken_labels_file(tmp_path_factory, recogniser, kind):
    base = tmp_path_factory.mktemp("labels")
    root = _people(base / "people")
    good = "path,identity,quality\nguest 0/0.png,0,12.5\nguest 0/1.png,0,40\n"
    content = {"cut": good + "guest 1/0.png,1,", "text": good + "guest 1/0.png,1,high\n",
               "header": "file,identity,score\nguest 0/0.png,0,1\n", "inf": good + "guest 1/0.png,1,inf\n",
               "empty": "", "no-path": good + ",1,3\n"}[kind]
    labels = base / "my labels.csv"
    labels.write_bytes(content.encode())
    expect_clear_error(f"read_labels: {kind}", lambda: read_labels(labels), labels)
    runs = base / "runs"
    expect_cli_error(f"fiqa train: labels {kind}", ["fiqa", "train", str(root), "--labels", str(labels),
                                                   "--recognizer", "none", "--out", str(runs), "--device", "cpu"],
                     labels, run_root=runs)


@given(st.binary(max_size=200))
def test_a_corrupt_recogniser_file(tmp_path_factory, content):
    base = tmp_path_factory.mktemp("recfile")
    root = _people(base / "people")
    bad = base / "face model.pt"
    bad.write_bytes(content)
    expect_cli_error("fiqa label: corrupt recogniser", _label(root, bad), bad)
    labels = base / "labels.csv"
    labels.write_text("path,identity,quality\nguest 0/0.png,0,12.5\n")
    runs = base / "runs"
    expect_cli_error("fiqa train: corrupt recogniser", ["fiqa", "train", str(root), "--labels", str(labels),
                                                        "--recognizer", str(bad), "--out", str(runs), "--device",
                                                        "cpu", "--set", "image_size=16", "--set", "batch_size=1"],
                     bad, run_root=runs)


@given(st.sampled_from([(30,), (30, 4, 1), (29, 4), (31, 4), (30, 0)]), st.sampled_from([np.nan, np.inf, 0.0, None]),
       st.integers(0, 29))
def test_precomputed_embeddings_of_wrong_shape_or_with_nan(tmp_path_factory, recogniser, shape, bad_value, row):
    base = tmp_path_factory.mktemp("emb")
    root = _people(base / "people")
    emb = np.random.default_rng(row).normal(size=(30, 4)) if bad_value is not None else np.ones(shape)
    if bad_value is not None:
        emb[row] = bad_value if bad_value == 0.0 else emb[row]
        emb[row, row % 4] = bad_value
    path = base / "my emb.npy"
    np.save(path, emb)
    expect_clear_error("read_embeddings", lambda: read_embeddings(path, read_identity_folders(root), root), path)
    expect_cli_error("fiqa label --embeddings", _label(root, recogniser, "--embeddings", path), path)


@given(st.sampled_from([errno.ENOSPC, errno.EACCES, errno.EROFS]))
def test_a_failing_write_leaves_no_half_file(tmp_path_factory, monkeypatch_module, code):
    base = tmp_path_factory.mktemp("full")
    root = _people(base / "people")
    np.save(base / "emb.npy", np.random.default_rng(0).normal(size=(30, 4)))

    def refuse(src, dst):
        raise OSError(code, os.strerror(code))

    with monkeypatch_module.context() as patch:
        patch.setattr(os, "replace", refuse)
        expect_cli_error("fiqa label: failing write", ["fiqa", "label", str(root), "--embeddings",
                                                       str(base / "emb.npy"), "--repeats", "1", "--out",
                                                       str(base / "out" / "labels.csv")], "labels.csv")
    assert not list((base / "out").iterdir())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@given(st.sampled_from(["missing", "garbage", "nan"]))
def test_evrc_with_broken_quality_or_pairs(tmp_path_factory, recogniser, kind):
    base = tmp_path_factory.mktemp("evrc")
    root = _people(base / "people")
    quality = base / "my scores.csv"
    lines = ["path,score"] + [f"{p},{i}" for i, p in enumerate(read_identity_folders(root).paths)]
    quality.write_text("\n".join({"missing": lines[:-3], "garbage": [*lines, "x,y,z"],
                                  "nan": [*lines[:-1], f"{lines[-1].split(',')[0]},nan"]}[kind]))
    expect_cli_error(f"fiqa evrc: quality {kind}", ["fiqa", "evrc", str(root), "--quality", str(quality),
                                                   "--recognizer", str(recogniser), "--size", "8", "--out",
                                                   str(base / "e.png")], quality)
    pairs = base / "my pairs.csv"
    pairs.write_text({"missing": "score,genuine\n0.5,1\n", "garbage": "score,genuine,quality_a,quality_b\n0.1,2,3,4\n",
                      "nan": "score,genuine,quality_a,quality_b\nnan,1,0,0\n"}[kind])
    expect_cli_error(f"fiqa evrc: pairs {kind}", ["fiqa", "evrc", "--pairs", str(pairs), "--out",
                                                 str(base / "e.png")], pairs)
    assert not (base / "e.png").exists() and not (base / "e.json").exists()
