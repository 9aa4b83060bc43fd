"""Recipe: one smoke step, and train -> model.pt -> evaluate on an official-format folder written here."""

from __future__ import annotations

import json

import torch

from lowlabel.engine import runtime as rt
from lowlabel.engine.trainer import TrainConfig
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
        data=recipe.DataConfig(sentence_encoder="tfidf", label_embedder="random:8", tail_range=5),
        optim=recipe.OptimConfig(batch_size=4, lr=1e-2),
        train=TrainConfig(max_steps=6, log_every=3, checkpoint_every=6),
    )
    runtime = rt.init("cpu", seed=0)
    run = tmp_path / "run"
    summary = recipe.train(cfg, data=tmp_path, run_dir=run, runtime=runtime, resume=False)
    assert summary["steps"] == 6 and (run / "model.pt").is_file()
    assert set(summary["eval"]) == {"surrogate_ndcg@5", "surrogate_ndcg@10", "surrogate_ndcg@20"}
    from_export = recipe.evaluate(cfg, checkpoint=run / "model.pt", data=tmp_path, runtime=runtime)
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    from_ckpt = recipe.evaluate(cfg, checkpoint=ckpt, data=tmp_path, runtime=runtime)
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
