"""SDD-FIQA on a user's folder, through the installed command as subprocesses: recogniser -> label -> train -> score
-> evrc, and a training run killed with SIGKILL and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sdd_fiqa_helpers import make_folder

from lowlabel.engine import checkpoint as ckpt
from lowlabel.methods.sdd_fiqa import demo
from lowlabel.methods.sdd_fiqa.extractors import save_recognizer
from lowlabel.methods.sdd_fiqa.model import FaceEmbedder
from lowlabel_cli import LowlabelProcesses

lowlabel = LowlabelProcesses().run  # `lowlabel ARGS, cwd=...` as a subprocess that must exit 0

TINY = ["--set", "image_size=16", "--set", "width=4", "--set", "batch_size=8", "--set", "train.epochs=0",
        "--threads", "1", "--device", "cpu"]


def _recognizer(path: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return save_recognizer(FaceEmbedder(width=4, image_size=16, embed_dim=8), path)


def test_label_train_score_evrc_on_a_users_folder(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "my people", n_ids=5, per_id=8, side=20)
    rec = _recognizer(tmp_path / "face net.pt")
    lowlabel("fiqa", "label", data, "--recognizer", rec, "--size", 16, "--out", "labels.csv", "--repeats", 2,
              cwd=tmp_path)
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    assert rows[0] == "path,identity,quality" and len(rows) == 41
    assert rows[1].startswith("member 00/frame_0.png,0,")
    quality = np.array([float(r.rsplit(",", 1)[1]) for r in rows[1:]])
    assert quality.min() == 0 and quality.max() == 100  # two repetitions' min-max: every image in [0, 100]
    lowlabel("fiqa", "train", data, "--labels", "labels.csv", "--recognizer", rec, "--out", "runs", *TINY,
              "--set", "train.max_steps=4", cwd=tmp_path)
    (run,) = (tmp_path / "runs" / "sdd_fiqa").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str(data.resolve()) and record["labels"] == str(tmp_path / "labels.csv")
    assert record["recognizer"] == str(rec)
    last = ckpt.newest_checkpoint(run)
    assert last is not None and last.name == "step_00000004.pt"
    assert [p.name for p in demo.figures(run)] == ["evrc_fmr0.01.png"]  # the report's figure of the run
    drawn = json.loads((run / "evrc_fmr0.01.json").read_text())
    assert (drawn["genuine_pairs"], drawn["impostor_pairs"]) == (140, 640)  # counted below
    assert drawn["pairs"] == f"40 training images of {data.resolve()}" and drawn["recognizer"] == str(rec)
    lowlabel("fiqa", "score", data, "--model", last, "--out", "scores.csv", cwd=tmp_path)
    scores = (tmp_path / "scores.csv").read_text().splitlines()
    assert scores[0] == "path,score" and len(scores) == 41
    assert all(np.isfinite(float(r.rsplit(",", 1)[1])) for r in scores[1:])
    done = lowlabel("fiqa", "evrc", data, "--quality", "scores.csv", "--recognizer", rec, "--size", 16,
                     "--out", "curve.png", "--fmr", 0.05, cwd=tmp_path)
    assert (tmp_path / "curve.png").stat().st_size > 0
    curve = json.loads((tmp_path / "curve.json").read_text())
    # 5 identities of 8: 5 * C(8, 2) = 140 genuine pairs, C(40, 2) - 140 = 640 impostor pairs, all enumerated
    assert (curve["genuine_pairs"], curve["impostor_pairs"]) == (140, 640)
    assert len(curve["fnmr"]) == 20 and f"AOC = {curve['aoc']:.4f}" in done


def test_trunk_starts_from_the_recogniser(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "crew", n_ids=5, per_id=8, side=16)
    rec = _recognizer(tmp_path / "rec.pt")
    (tmp_path / "labels.csv").write_text("path,identity,quality\n" + "".join(
        f"member {k:02d}/frame_{j}.png,{k},{10.0 * j}\n" for k in range(5) for j in range(8)))
    lowlabel("fiqa", "train", data, "--labels", "labels.csv", "--recognizer", rec, "--out", "runs", *TINY,
              "--set", "train.max_steps=1", "--set", "optim.lr=0", "--set", "optim.weight_decay=0", cwd=tmp_path)
    (run,) = (tmp_path / "runs" / "sdd_fiqa").iterdir()
    state = ckpt.load(ckpt.newest_checkpoint(run))["model"]
    expected = torch.jit.load(str(rec)).state_dict()
    for key, value in expected.items():
        if key.startswith("trunk.") and "num_batches_tracked" not in key and "running" not in key:
            assert torch.equal(state[key], value), key  # lr 0: the trunk is still the recogniser's


def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    procs = LowlabelProcesses()
    data = make_folder(tmp_path / "team", n_ids=5, per_id=8, side=16)
    rec = _recognizer(tmp_path / "rec.pt")
    (tmp_path / "labels.csv").write_text("path,identity,quality\n" + "".join(
        f"member {k:02d}/frame_{j}.png,{k},{10.0 * j + k}\n" for k in range(5) for j in range(8)))
    steps = ["--set", "train.max_steps=150", "--set", "train.checkpoint_every=1", "--set",
             "train.keep_checkpoints=2"]
    args = [data, "--labels", "labels.csv", "--recognizer", rec, *TINY, *steps]
    # the checkpoint holds the trunk: resuming must not need the recogniser any more
    killed, _ = procs.kill_and_resume(["fiqa", "train"], args, slug="sdd_fiqa", steps=150, cwd=tmp_path, timeout=120,
                                      before_resume=rec.unlink)
    assert json.loads((killed / "run.json").read_text())["resumed"]
