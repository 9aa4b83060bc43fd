"""Recipe: the official defaults, one smoke step, and train -> model.pt -> evaluate on an official-format folder
written here."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lowlabel.engine import config as cfg_mod
from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import OptimConfig, TrainConfig, lr_factor
from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval import recipe

SUBJECTS = ["man", "woman", "dog", "cat", "horse", "bird"]
OBJECTS = ["hat", "ball", "car", "tree"]


def test_smoke_step_gives_finite_loss_and_gradients():
    runtime = rt.init("cpu", seed=0)
    case = recipe.smoke_case(runtime)
    losses = case.step_fn(case.model, case.batch, 0)
    assert torch.isfinite(losses["mse"])
    losses["mse"].backward()
    assert all(p.grad is not None for p in case.model.parameters())


def test_defaults_are_the_official_hyperparameters():
    """Spec "Training procedure" / "Losses" / "Architecture": Adam lr 1e-4, ExponentialLR 0.9 stepped once per epoch,
    batch 32 pairs, 25 epochs, TAIL_RANGE 100, 3 layers with H = 300 (Flickr/GT-graph configs), GIN MLP 512."""
    cfg = recipe.Config()
    assert dataclasses.asdict(cfg.optim) == dataclasses.asdict(
        OptimConfig(name="adam", lr=1e-4, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, schedule="exponential",
                    gamma=0.9, milestones=[], warmup_steps=0))
    assert cfg.train.epochs == 25 and cfg.train.max_steps == 0
    assert cfg.data.batch_size == 32 and cfg.data.tail_range == 100 and cfg.data.captions_per_image == 5
    assert (cfg.model.conv, cfg.model.layers, cfg.model.hidden, cfg.model.gin_mlp_hidden) == ("gcn", 3, 300, 512)
    assert cfg.model.official_padding is False  # the documented deviation: no padded slots
    assert cfg.model.in_dim == 0  # the label embedder's width, resolved by training
    # the learning rate after e epochs is 1e-4 * 0.9^e, however many steps an epoch has
    assert [lr_factor(s, 100, cfg.optim, steps_per_epoch=4) for s in (0, 3, 4, 8, 11)] == pytest.approx(
        [1, 1, 0.9, 0.81, 0.81])


def test_build_model_resolves_the_node_feature_width():
    cfg = recipe.Config(model=recipe.ModelConfig(hidden=8, layers=1),
                        data=recipe.DataConfig(label_embedder="random:12"))
    assert recipe.resolved(cfg).model.in_dim == 12
    assert recipe.build_model(cfg).in_dim == 12
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_dim=10))
    with pytest.raises(LowlabelError, match=r"model\.in_dim=10.*12-d node features"):
        recipe.build_model(bad)


def test_train_then_evaluate_official_folder(tmp_path):
    records, annotations = [], []
    for i in range(24):
        s, o = SUBJECTS[i % 6], OBJECTS[i % 4]
        records.append({
            "image_id": i,
            "objects": [{"object_id": 1, "names": [s], "attributes": ["big" if i % 2 else "small"]},
                        {"object_id": 2, "names": [o]}],
            "relationships": [{"relationship_id": 1, "predicate": "near", "subject_id": 1, "object_id": 2}],
        })
        annotations += [{"image_id": i, "caption": f"a {s} near a {o}"}, {"image_id": i, "caption": f"{s} and {o}"}]
    (tmp_path / "scene_graphs.json").write_text(json.dumps(records))
    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": annotations}))
    (tmp_path / "split.json").write_text(json.dumps({str(i): "train" if i < 16 else "test" for i in range(24)}))
    cfg = recipe.Config(
        model=recipe.ModelConfig(hidden=8),
        data=recipe.DataConfig(sentence_encoder="tfidf", label_embedder="random:8", tail_range=5, batch_size=4),
        optim=dataclasses.replace(recipe.Config().optim, lr=1e-2),
        train=TrainConfig(max_steps=6, log_every=3, checkpoint_every=6),
    )
    runtime = rt.init("cpu", seed=0)
    run = tmp_path / "run"
    summary = recipe.train(cfg, data=tmp_path, run_dir=run, runtime=runtime, resume=False)
    assert summary["steps"] == 6 and (run / "model.pt").is_file()
    saved = cfg_mod.load_config(recipe.Config, run / "config.yaml")
    assert saved.model.in_dim == 8 and saved == recipe.resolved(cfg)  # the run's config names the whole model
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1e-2 * 0.9**0, 1e-2 * 0.9**1])  # 4 steps per epoch (16 anchors / 4): 0.9 per epoch
    assert set(summary["eval"]) == {"surrogate_ndcg@5", "surrogate_ndcg@10", "surrogate_ndcg@20"}
    from_export = recipe.evaluate(cfg, checkpoint=run / "model.pt", data=tmp_path, runtime=runtime)
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    from_ckpt = recipe.evaluate(saved, checkpoint=ckpt, data=tmp_path, runtime=runtime)
    assert recipe.evaluate(cfg, checkpoint=ckpt, data=tmp_path, runtime=runtime) == from_ckpt  # in_dim 0 resolves
    assert from_export == from_ckpt  # the exported weights are the final trainer weights
    assert from_export["ndcg@10"] == summary["eval"]["surrogate_ndcg@10"]
    assert all(0.0 <= v <= 1.0 for v in from_export.values())


def test_gallery_query_is_the_most_related_scene_with_three_objects():
    from types import SimpleNamespace

    from lowlabel.methods.sg_retrieval.demo import gallery_query

    scenes = [SimpleNamespace(objects=[0] * k) for k in (1, 3, 4, 1)]
    judge = torch.tensor([[1.0, 0.9, 0.9, 0.9],  # best other / sum of the best three: 0.9 / 2.7
                          [0.5, 1.0, 0.8, 0.1],  # 0.8 / 1.4
                          [0.5, 0.3, 1.0, 0.7],  # 0.7 / 1.5
                          [0.9, 0.2, 0.1, 1.0]])  # 0.9 / 1.2
    assert gallery_query(scenes, judge, top=1) == 1  # scene 0 (and 3) relate more but have one object
    assert gallery_query(scenes, judge, top=3) == 2
    assert gallery_query(scenes, judge, min_objects=5) == 0  # nobody qualifies: the most related scene overall


def test_epochs_are_resolved_by_the_trainer(tmp_path):
    """train.epochs (no max_steps) runs epochs x (anchors // batch) steps on the shapes world."""
    cfg = recipe.Config(
        model=recipe.ModelConfig(hidden=8, layers=1),
        data=recipe.DataConfig(n_scenes=30, sentence_encoder="tfidf", label_embedder="random:8", batch_size=8,
                               tail_range=5),
        train=TrainConfig(epochs=2, log_every=1, checkpoint_every=100),
    )
    summary = recipe.train(cfg, data=None, run_dir=tmp_path, runtime=rt.init("cpu", seed=0), resume=False)
    assert summary["steps"] == 2 * (24 // 8)


def test_evaluate_names_a_file_that_is_no_checkpoint(tmp_path):
    runtime = rt.init("cpu", seed=0)
    cfg = recipe.Config(data=recipe.DataConfig(n_scenes=10, sentence_encoder="tfidf", label_embedder="random:8"))
    with pytest.raises(LowlabelError, match="does not exist"):
        recipe.evaluate(cfg, checkpoint=tmp_path / "missing.pt", data=None, runtime=runtime)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LowlabelError, match=r"junk\.pt"):
        recipe.evaluate(cfg, checkpoint=tmp_path / "junk.pt", data=None, runtime=runtime)


def test_figures_are_the_pngs_of_the_folder(tmp_path):
    from lowlabel.methods.sg_retrieval.demo import figures

    (tmp_path / "gallery.png").write_bytes(b"png")
    (tmp_path / "summary.json").write_text("{}")
    assert figures(tmp_path) == [tmp_path / "gallery.png"]


def test_top_matches_excludes_the_query_and_breaks_ties_by_column():
    from lowlabel.methods.sg_retrieval.figures import top_matches

    scores = torch.tensor([[9.0, 1.0, 3.0, 3.0, 2.0], [0.0] * 5, [0.0] * 5, [0.0] * 5, [0.0] * 5])
    assert top_matches(scores, 0, k=3) == [2, 3, 4]
    assert top_matches(scores, 0, k=10) == [2, 3, 4, 1]  # at most the 4 other items
