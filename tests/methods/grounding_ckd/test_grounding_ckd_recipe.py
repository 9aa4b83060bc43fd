"""CKD recipe, features file and CLI: official defaults, a tiny run on a features folder, resume, evaluation against
loops, the test-time path without the detector, error paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import contract_problems
from lowlabel.errors import LowlabelError
from lowlabel.methods.grounding_ckd import recipe, shapes_world
from lowlabel.methods.grounding_ckd.cli import app
from lowlabel.methods.grounding_ckd.features import GroundingSet, read_grounding_set, write_grounding_set
from lowlabel.metrics.grounding import box_iou

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _set(n: int = 12, r: int = 6, seed: int = 0) -> GroundingSet:
    """Random images whose proposal 0..2 carry a class signal in features and scores; 2 sentences per image."""
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 50, (n, r, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + g.uniform(8, 30, (n, r, 2)).astype(np.float32)], -1)
    feats = g.normal(size=(n, r, 10)).astype(np.float32)
    scores = g.uniform(0, 0.2, (n, r, 3)).astype(np.float32)
    words = ["red circle", "blue square", "green star"]
    sent_img, sents, q_sent, q_text, q_cls, gt = [], [], [], [], [], []
    for i in range(n):
        for c in (i % 3, (i + 1) % 3):
            feats[i, c, c] += 3.0
            scores[i, c, c] = 0.9
        for k in range(2):
            s = len(sents)
            sent_img.append(i)
            sents.append(f"s{i}-{k}")
            c = (i + k) % 3
            q_sent.append(s)
            q_text.append(words[c])
            q_cls.append(c)
            gt.append(boxes[i, c][None])
    return GroundingSet([f"img{i}" for i in range(n)], feats, boxes, np.ones((n, r), bool), scores,
                        ["circle", "square", "star"], np.asarray(sent_img), sents, np.asarray(q_sent), q_text,
                        np.asarray(q_cls), np.stack(gt), np.ones((len(gt), 1), bool))


def _cfg(steps: int = 4) -> recipe.Config:
    cfg = recipe.Config(embedder="random:16", token_dim=16, lstm_dim=8, hidden_dim=16, embed_dim=8, batch_size=4,
                        ramp_block=2, max_phrases=4, max_tokens=4)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps, log_every=1,
                                                              checkpoint_every=2))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_grounding_set(tmp_path / "data" / "train.npz", _set(seed=0))
    write_grounding_set(tmp_path / "data" / "val.npz", _set(n=6, seed=1))
    return tmp_path / "data"


def test_contract() -> None:
    assert contract_problems("grounding_ckd") == []


def test_official_defaults() -> None:
    cfg = recipe.Config()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule, cfg.optim.weight_decay) == ("adam", 1e-4, "constant", 0)
    assert (cfg.train.epochs, cfg.batch_size, cfg.max_phrases, cfg.max_tokens) == (6, 32, 16, 10)
    assert (cfg.lstm_dim, cfg.hidden_dim, cfg.embed_dim, cfg.neighbours) == (300, 1024, 512, 8)
    assert (cfg.ramp_block, cfg.ramp_cap, cfg.distill, cfg.teacher_norm) == (500, 3.0, True, "scale")


def test_features_file_round_trip_and_errors(tmp_path: Path) -> None:
    data = _set()
    back = read_grounding_set(write_grounding_set(tmp_path / "a.npz", data))
    assert back.phrase_text == data.phrase_text and back.class_names == data.class_names
    np.testing.assert_array_equal(back.features, data.features)
    with pytest.raises(LowlabelError, match="not found"):
        read_grounding_set(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", features=np.zeros(3))
    with pytest.raises(LowlabelError, match="missing arrays"):
        read_grounding_set(tmp_path / "bad.npz")
    with pytest.raises(LowlabelError, match="'boxes' has shape"):
        dataclasses.replace(data, boxes=data.boxes[:, :, :3])
    with pytest.raises(LowlabelError, match="phrase_class"):
        dataclasses.replace(data, phrase_class=data.phrase_class + 5)


def test_hits_and_references_against_loops() -> None:
    data, cfg = _set(), _cfg()
    phrases = recipe.phrase_arrays(cfg, data)
    scores = torch.randn(len(data.sentences), cfg.max_phrases, data.num_regions)
    got = recipe.hits(scores, data, phrases, (1, 3))
    want, rand, det = [], [], []
    for s in range(len(data.sentences)):
        img = data.sentence_image[s]
        for p, q in enumerate(phrases.slots[s].tolist()):
            if q < 0:
                continue
            iou = box_iou(torch.from_numpy(data.gt_boxes[q]), torch.from_numpy(data.boxes[img]))[0]
            order = torch.argsort(scores[s, p], descending=True)
            want.append([bool((iou[order[:k]] > 0.5).any()) for k in (1, 3)])
            rand.append(float((iou > 0.5).double().mean()))
            det.append(bool(iou[int(np.argmax(data.scores[img][:, data.phrase_class[q]]))] > 0.5))
    assert got.tolist() == want
    refs = recipe.references(data, phrases)
    assert refs["random R@1"] == pytest.approx(np.mean(rand)) and refs["detector R@1"] == pytest.approx(np.mean(det))


def test_step_encodes_each_distinct_phrase_once_with_the_same_loss() -> None:
    data, cfg = _set(), _cfg()
    cfg = recipe.fit_to_data(cfg, data)
    phrases = recipe.phrase_arrays(cfg, data)
    regions = recipe.Regions(data)
    model = recipe.build_model(cfg)
    batch = (torch.from_numpy(data.sentence_image[:6]), phrases.ids[:6], phrases.classes[:6])
    out = recipe.make_step_fn(cfg, regions, phrases.table)(model, batch, 10)
    image, ids, _ = batch
    known = recipe.known_words(phrases.table)
    region, phrase, mask = model(regions.features[image], phrases.table[ids], known[ids])
    from lowlabel.methods.grounding_ckd import losses

    assert out["nce"].item() == pytest.approx(losses.nce_loss(region, phrase, mask).item(), rel=1e-5)
    assert out["distill"].item() > 0


def test_train_lowers_the_loss_and_resume_gives_the_same_weights(folder: Path, tmp_path: Path) -> None:
    runtime = rt.init("cpu", seed=0)
    cfg = _cfg(6)
    _, full = recipe.train_model(cfg, data=folder, run_dir=tmp_path / "full", runtime=runtime, resume=False)
    assert set(full["test"]) == {"R@1", "R@5", "R@10", "phrases"} and "detector R@1" in full["references"]
    half = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3))
    recipe.train_model(half, data=folder, run_dir=tmp_path / "resumed", runtime=runtime, resume=False)
    recipe.train_model(cfg, data=folder, run_dir=tmp_path / "resumed", runtime=runtime, resume=True)
    a = torch.load(sorted((tmp_path / "full" / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    b = torch.load(sorted((tmp_path / "resumed" / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_test_time_path_never_calls_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    world = shapes_world.WorldConfig(n_detector=8, n_train=6, n_test=4, detector_steps=2, detector_batch=4)
    train_set, test_set = shapes_world.build_world(world)
    cfg = recipe.fit_to_data(recipe.Config(embedder="random:16", token_dim=16, lstm_dim=8, hidden_dim=16,
                                           embed_dim=8), train_set)
    model = recipe.build_model(cfg)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the detector was called at test time")

    class NoScores:
        def __getattr__(self, name: str) -> None:
            raise AssertionError("the detector's scores were read at test time")

        def __getitem__(self, key: object) -> None:
            raise AssertionError("the detector's scores were read at test time")

    monkeypatch.setattr(shapes_world.TinyDetector, "forward", boom)
    monkeypatch.setattr(shapes_world, "detect", boom)
    monkeypatch.setattr(recipe, "teacher_scores", boom)
    test_set.scores = NoScores()  # type: ignore[assignment]
    phrases = recipe.phrase_arrays(cfg, test_set)
    scores = recipe.ground(model, test_set, phrases)
    assert scores.shape == (len(test_set.sentences), cfg.max_phrases, world.num_regions)
    assert set(recipe.evaluate_set(model, test_set, cfg)) == {"R@1", "R@5", "R@10", "phrases"}


def test_cli_train_ground_compare(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--set", "embedder=random:16", "--set", "token_dim=16", "--set", "lstm_dim=8", "--set",
              "hidden_dim=16", "--set", "embed_dim=8", "--set", "batch_size=4", "--device", "cpu"]
    result = runner.invoke(app, ["train", "--data", str(folder), "--iterations", "2", "--out",
                                 str(tmp_path / "runs"), *common])
    assert result.exit_code == 0, result.output
    ckpt = sorted((tmp_path / "runs").glob("grounding_ckd/*/checkpoints/*.pt"))[-1]
    result = runner.invoke(app, ["ground", str(ckpt), str(folder / "val.npz"), "--out", str(tmp_path / "g.json"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads((tmp_path / "g.json").read_text())["sentences"]
    assert len(rows) == 12 and len(rows[0]["phrases"][0]["box"]) == 4
    result = runner.invoke(app, ["compare", "--data", str(folder), "--seeds", "0,1", "--iterations", "2",
                                 "--out", str(tmp_path / "cmp"), "--json", str(tmp_path / "cmp.json"), *common])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "cmp.json").read_text())
    assert len(table["per_seed"]["NCE alone"]) == 2 and "detector R@1" in table["references"]


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "--data", str(tmp_path), "--seeds", "a,b"])
    assert result.exit_code != 0 and "--seeds" in str(result.exception or result.output)
    result = runner.invoke(app, ["prepare-coco", str(tmp_path), "--detector", str(tmp_path)])
    assert isinstance(result.exception, LowlabelError) and "annotations" in str(result.exception)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, LowlabelError) and "train" in str(result.exception)
    for bad in ("teacher_norm=softmax", "batch_size=1", "neighbours=0"):
        result = runner.invoke(app, ["train", "--set", bad, "--device", "cpu", "--out", str(tmp_path / "r")])
        assert isinstance(result.exception, LowlabelError) and bad.split("=")[0] in str(result.exception)
    assert not (tmp_path / "r").exists()


def test_smoke_case_gives_every_parameter_a_gradient() -> None:
    case = recipe.smoke_case(rt.init("cpu"))
    out = case.step_fn(case.model.train(), case.batch, 0)
    assert set(out) == {"nce", "distill"} and all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    for name, p in case.model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name
