"""Bad input to DyML's readers, loss, `lowlabel dyml metrics` and `compare`: label files, hierarchy CSVs and Omniglot
zips of any bytes or truncated, a fine class with two parents, corrupt or truncated arrays, NaN/Inf embeddings,
non-integer labels and mismatched shapes, unknown model specs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sweep_harness import expect_clear_error, expect_cli_error

from lowlabel.methods.dyml import data
from lowlabel.methods.dyml.losses import csl_loss


@given(st.binary(max_size=300))
def test_label_file_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("dyml") / "label.csv"
    path.write_bytes(content)
    expect_clear_error("dyml: label file, any bytes", lambda: data.read_label_file(path), path, valid_ok=True)


@given(st.binary(max_size=300))
def test_hierarchy_csv_of_any_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("dyml") / "labels.csv"
    path.write_bytes(content)
    expect_clear_error("dyml: hierarchy CSV, any bytes",
                       lambda: data.read_hierarchy_csv(path, check_files=False), path, valid_ok=True)


@given(st.sampled_from([1, 2]), st.integers(0, 3))
def test_hierarchy_csv_fine_class_with_two_parents(tmp_path_factory, level, row):
    path = tmp_path_factory.mktemp("dyml") / "labels.csv"
    rows = [["a.png", "f0", "m0", "c0"], ["b.png", "f0", "m0", "c0"], ["c.png", "f1", "m1", "c0"],
            ["d.png", "f1", "m1", "c0"]]
    rows[row][level + 1] = "other"
    path.write_text("\n".join(", ".join(r) for r in rows) + "\n")
    expect_clear_error("dyml: hierarchy CSV, not a tree", lambda: data.read_hierarchy_csv(path, check_files=False),
                       path)


def _omniglot_zip(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6), 255, dtype=np.uint8)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w") as archive:
        for c in range(2):
            for drawer in range(2):
                archive.writestr(f"top/Korean/character0{c + 1}/000{c + 1}_0{drawer + 1}.png", buf.getvalue())
    return path.read_bytes()


@given(st.one_of(st.binary(max_size=200), st.floats(0.0, 0.95)))
def test_omniglot_zip_corrupt_or_truncated(tmp_path_factory, damage):
    path = tmp_path_factory.mktemp("dyml") / "images_background.zip"
    whole = _omniglot_zip(path)
    path.write_bytes(damage if isinstance(damage, bytes) else whole[: int(len(whole) * damage)])
    expect_clear_error("dyml: Omniglot zip", lambda: data.read_omniglot([path]), path)


@given(st.sampled_from(["out of range", "negative", "two parents"]))
def test_csl_loss_bad_labels(kind):
    labels = torch.tensor([[0, 0, 0], [1, 0, 0]])
    table = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 1, 0]])
    if kind == "two parents":
        table = torch.cat([table, torch.tensor([[2, 0, 0]])])
    else:
        labels[1, 0] = 3 if kind == "out of range" else -1
    expect_clear_error(f"dyml: csl_loss {kind}",
                       lambda: csl_loss(torch.randn(2, 4), labels, torch.randn(3, 4), table),
                       ["fine class", "fine labels"])


BAD_ARRAYS = ("truncated", "bytes", "nan", "inf", "float labels", "fewer labels", "empty", "query width")


@given(st.sampled_from(BAD_ARRAYS), st.integers(0, 9), st.floats(0.0, 0.9))
def test_metrics_command_on_bad_arrays(tmp_path_factory, kind, where, fraction):
    root = tmp_path_factory.mktemp("dyml")
    emb, lab = np.random.default_rng(where).standard_normal((10, 4)).astype(np.float32), np.arange(10)[:, None] % 3
    files = {"emb.npy": emb, "lab.npy": lab}
    extra: list[str] = []
    if kind in ("nan", "inf"):
        emb[where, where % 4] = np.nan if kind == "nan" else np.inf
    elif kind == "float labels":
        files["lab.npy"] = lab + 0.5
    elif kind == "fewer labels":
        files["lab.npy"] = lab[: where % 9 + 1]
    elif kind == "empty":
        files["emb.npy"] = emb[:0]
    elif kind == "query width":
        files.update({"q.npy": emb[:, :3], "ql.npy": lab})
        extra = ["--queries", str(root / "q.npy"), "--query-labels", str(root / "ql.npy")]
    for name, array in files.items():
        np.save(root / name, array)
    bad = root / ("q.npy" if kind == "query width" else "lab.npy" if "labels" in kind else "emb.npy")
    if kind == "truncated":
        bad.write_bytes(bad.read_bytes()[: int(bad.stat().st_size * fraction)])
    elif kind == "bytes":
        bad.write_bytes(np.random.default_rng(where).bytes(where * 7))
    expect_cli_error(f"dyml metrics: {kind}", ["dyml", "metrics", root / "emb.npy", root / "lab.npy", *extra], bad)


VALID_SPECS = {f"{name}{kind}" for name in ("fine_only", "level_sum") for kind in ("", ":cosface", ":multi_similarity")}


@given(st.text(alphabet="acdeilmnorstuy_:", min_size=1, max_size=24).filter(lambda s: s not in VALID_SPECS | {"csl"}))
def test_compare_command_on_unknown_models(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("dyml")
    expect_cli_error("dyml compare: model spec", ["dyml", "compare", "--loss", spec, "--seed", "0", "--device", "cpu",
                                                  "--out", str(root)], f"model '{spec}'", run_root=root)
