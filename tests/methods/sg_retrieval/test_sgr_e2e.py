"""IRSGS on a user's own dataset, end to end through the CLI (subprocesses): files under the user's own names tied
together by a manifest (graphs, COCO captions, split, official ResNet features HDF5, human judgement CSVs, images),
`lowlabel train` and `lowlabel eval`, and a training run killed (SIGKILL) after a checkpoint and resumed, which must
end with the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

SUBJECTS = ["man", "woman", "dog", "cat", "horse"]
OBJECTS = ["hat", "ball", "car", "tree"]
TINY = ["--set", "model.hidden=8", "--set", "data.label_embedder=random:8", "--set", "data.sentence_encoder=tfidf",
        "--set", "data.batch_size=4", "--set", "data.tail_range=5", "--set", "optim.lr=0.01", "--device", "cpu",
        "--threads", "1"]


def write_dataset(root: Path, n: int = 30) -> Path:
    """A user's dataset under its own file names and the manifest naming them (returned): n images, the last 10
    test; two captions each; 16-d 'ResNet' features; three judged triplets among test images; an image per id."""
    root.mkdir(parents=True, exist_ok=True)
    graphs, annotations = [], []
    for i in range(n):
        s, o = SUBJECTS[i % 5], OBJECTS[i % 4]
        graphs.append({"image_id": 500 + i,
                       "objects": [{"object_id": 1, "names": [s], "attributes": ["big" if i % 2 else "small"]},
                                   {"object_id": 2, "names": [o]}],
                       "relationships": [{"relationship_id": 1, "predicate": "near", "subject_id": 1,
                                          "object_id": 2}]})
        annotations += [{"image_id": 500 + i, "caption": f"a {s} near a {o}"},
                        {"image_id": 500 + i, "caption": f"{s} and {o}"}]
    (root / "my graphs.json").write_text(json.dumps(graphs))
    (root / "my_captions.json").write_text(json.dumps({"annotations": annotations}))
    (root / "halves.json").write_text(json.dumps({str(500 + i): "train" if i < n - 10 else "test" for i in range(n)}))
    with h5py.File(root / "feats.h5", "w") as fh:
        fh.create_dataset("resnet_feature", data=np.random.default_rng(0).random((n, 16)).astype(np.float32))
        fh.create_dataset("id", data=np.arange(500, 500 + n))
    (root / "judged.csv").write_text(f"triplet_id,query_id,target_id1,target_id2\n1,{500 + n - 10},{500 + n - 5},"
                                     f"{500 + n - 2}\n2,{500 + n - 9},{500 + n - 4},{500 + n - 1}\n3,1,2,3\n")
    (root / "votes.csv").write_text("user_id,answer,triplet_id\nu1,0,1\nu2,0,1\nu3,1,1\nu1,1,2\nu2,1,2\nu1,0,3\n")
    (root / "pics").mkdir(exist_ok=True)
    for i in range(n):
        Image.new("RGB", (24, 16), (8 * i, 100, 200)).save(root / "pics" / f"{500 + i}.png")
    manifest = root / "dataset.yaml"
    manifest.write_text("graphs: my graphs.json\ncaptions: my_captions.json\nsplit: halves.json\n"
                        "resnet_features: feats.h5\ntriplets: judged.csv\nratings: votes.csv\nimages: pics\n")
    return manifest


def test_train_and_eval_on_own_files_then_kill_and_resume(tmp_path: Path, lowlabel_processes) -> None:
    procs = lowlabel_processes
    manifest = write_dataset(tmp_path / "mine")
    steps = 200  # long enough that the kill lands mid-run however fast the machine
    train = ["train", "sg_retrieval", "--data", manifest, "--set", f"train.max_steps={steps}",
             "--set", "train.checkpoint_every=10", "--set", "train.keep_checkpoints=100", "--set", "train.log_every=10",
             *TINY]
    whole = procs.start(*train, "--out", "whole", cwd=tmp_path)
    killed = procs.start(*train, "--out", "killed", cwd=tmp_path)
    run = procs.kill_after_checkpoint(killed, tmp_path / "killed", "sg_retrieval", steps, timeout=90)
    resumed_text = procs.start("train", "sg_retrieval", "--resume", run, "--threads", "1", "--device", "cpu",
                               cwd=tmp_path)
    procs.finish(whole, timeout=120)
    reference_run = procs.only_run(tmp_path / "whole", "sg_retrieval")
    assert "resumed from" in procs.finish(resumed_text, timeout=120)
    procs.assert_same_weights(reference_run, run, steps)
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == str(manifest.resolve()) and len(record["resumed"]) == 1

    # the uninterrupted run's outputs: metrics, checkpoint, exported model, retrieved-images figure
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["steps"] == steps
    assert {"surrogate_ndcg@10", "surrogate_pool_ndcg@10", "surrogate_human_agreement"} <= set(summary["eval"])
    assert summary["eval"]["surrogate_human_triplets"] == 2  # the third triplet names images without graphs
    logged = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "mse" in r][-1] == steps
    assert (reference_run / "checkpoints" / f"step_{steps:08d}.pt").is_file()
    assert (reference_run / "model.pt").is_file()
    assert (reference_run / "retrieval.png").read_bytes()[:4] == b"\x89PNG"

    text = procs.run("eval", "sg_retrieval", "--checkpoint", reference_run / "model.pt", "--data", manifest,
                     "--config", reference_run / "config.yaml", "--device", "cpu", cwd=tmp_path, timeout=120)
    for key in ("ndcg@10", "pool_ndcg@10", "human_agreement"):
        assert f"{summary['eval'][f'surrogate_{key}']:.4f}" in text and key in text
