"""SOHO recipe: the contract, official defaults, a tiny pre-training run with retrieval, kill-and-resume, the step
function's tasks, batching, retrieval recalls against hand counts, the world's questions, VQA fine-tuning."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.engine.recipe import build_optimizer, contract_problems
from lowlabel.errors import LowlabelError
from lowlabel.methods.soho import downstream, recipe
from lowlabel.methods.soho.data import WORDPIECE_SPECIAL, WORDPIECE_VOCAB, PairBatches, WordPieceTokenizer, build_corpus
from lowlabel.methods.soho.retrieval import retrieval_recalls
from lowlabel.methods.soho.world import ANSWERS, world_config, world_questions, world_split

pytest.importorskip("tokenizers")


def _tiny(steps: int = 2, **train: object) -> recipe.Config:
    cfg = recipe.tiny_config()
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps, **train))


def test_contract() -> None:
    assert contract_problems("soho") == []


def test_official_defaults() -> None:
    cfg = recipe.Config()
    m, d = cfg.model, cfg.data
    assert (m.backbone, m.frozen_stages, m.hidden, m.layers, m.heads, m.ffn) == ("resnet18", 1, 768, 3, 12, 3072)
    assert (m.num_codes, m.decay, m.decay_schedule, m.max_decay, m.mask_prob, m.pool) == (2048, 0.4, "constant",
                                                                                           0.99, 0.015, True)
    assert (d.images_per_batch, d.sentence_group, d.max_length, d.scale, d.size_divisor) == (16, 4, 16, [1000, 600],
                                                                                             32)
    assert (d.mlm_prob, d.itm_prob, d.itm_hard_temperature) == (0.15, 0.5, 0.0)
    o = cfg.optim
    assert (o.name, o.lr, o.betas, o.eps, o.weight_decay) == ("adamw", 1e-4, [0.9, 0.999], 1e-6, 0.01)
    assert (o.schedule, o.milestones, o.gamma, o.warmup_steps) == ("step", [25 / 40, 35 / 40], 0.1, 1000)
    assert (cfg.train.epochs, cfg.train.grad_clip) == (40, 10.0)
    assert (cfg.backbone_optimizer, cfg.optim.lr * cfg.backbone_lr_mult, cfg.backbone_momentum,
            cfg.backbone_weight_decay) == ("sgd", pytest.approx(1e-2), 0.9, 1e-4)
    v = downstream.VQAConfig()
    assert (v.train.epochs, v.train.grad_clip, v.optim.milestones) == (20, 4.0, [12 / 20, 16 / 20])


def test_tokenizer_special_ids_match_the_constants() -> None:
    tok = WordPieceTokenizer(16)
    assert tok.vocab_size == WORDPIECE_VOCAB
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == tuple(WORDPIECE_SPECIAL.values())


def test_decay_schedules() -> None:
    constant = recipe.ModelConfig()
    assert [recipe.decay_at(constant, s) for s in (0, 5, 1000)] == [0.4, 0.4, 0.4]
    ramp = recipe.ModelConfig(decay_schedule="ramp")
    assert [recipe.decay_at(ramp, s) for s in (0, 1, 2, 10)] == pytest.approx([0.4, 0.8, 0.99, 0.99])
    with pytest.raises(LowlabelError, match="decay_schedule"):
        recipe.decay_at(recipe.ModelConfig(decay_schedule="cosine"), 0)


def test_param_groups_split_backbone_and_rest() -> None:
    cfg = dataclasses.replace(_tiny(), backbone_lr_mult=0.5)
    model = recipe.build_model(cfg)
    back, rest = recipe.param_groups(model, cfg)
    own = back["optim"]
    assert (own.name, own.lr, own.momentum, own.weight_decay) == ("sgd", 0.5 * cfg.optim.lr, 0.9, 1e-4)
    assert set(rest) == {"params"}  # the rest takes `optim` itself
    optimizer = build_optimizer([back, rest], cfg.optim)
    kinds = [type(o).__name__ for o in optimizer.optimizers]  # type: ignore[attr-defined]
    assert kinds == ["SGD", "AdamW"]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in back["params"]} | {id(p) for p in rest["params"]} == trainable
    assert all(not p.requires_grad for p in model.backbone.layer1.parameters())


def test_build_model_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    a = recipe.build_model(_tiny())
    assert torch.equal(torch.rand(1), expected)
    b = recipe.build_model(_tiny())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_batches_are_deterministic_and_grouped() -> None:
    cfg = _tiny()
    corpus, captions = recipe.load_corpus(cfg, None, "train")
    assert corpus.input_ids.shape == (8, 2, 24) and len(captions) == 8
    src = PairBatches(corpus, 4, seed=1)
    one, two = next(iter(src.epoch(3))), next(iter(src.epoch(3)))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert one["images"].shape == (4, 3, 32, 32) and one["input_ids"].shape == (8, 24)
    assert one["image_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    resumed = list(src.epoch(3, start=1))
    assert len(resumed) == 1 and torch.equal(resumed[0]["input_ids"], list(src.epoch(3))[1]["input_ids"])
    with pytest.raises(LowlabelError, match="less than one batch"):
        PairBatches(corpus, 9)


def test_step_function_tasks() -> None:
    case = recipe.smoke_case(rt.init("cpu"))
    losses, indices = case.step_fn(case.model, case.batch, 0)
    assert set(losses) == {"mlm", "itm", "mvm"} and all(torch.isfinite(v) for v in losses.values())
    assert indices.shape == (8, 4)  # 4 images x 2 captions, 2x2 tokens (32 px, stride 8, pool 2)
    itm_only = recipe.make_step_fn(recipe.tiny_config(), tasks=("itm",))
    assert set(itm_only(case.model, case.batch, 0)[0]) == {"itm"}
    with pytest.raises(LowlabelError, match="tasks"):
        recipe.make_step_fn(recipe.tiny_config(), tasks=("mlm",))


def test_tiny_pretraining_writes_usage_and_retrieval(tmp_path: Path) -> None:
    summary = recipe.train(_tiny(3), data=None, run_dir=tmp_path, runtime=rt.init("cpu"), resume=False)
    assert summary["steps"] == 3 and set(summary["final_losses"]) == {"loss", "mlm", "itm", "mvm"}
    assert set(summary["test"]) == {"tr_r1", "ir_r1", "tr_r5"}  # 4 test images, 2 captions each
    usage = recipe.read_usage(tmp_path)
    assert [u["step"] for u in usage] == [1, 2, 3]
    assert all(1 <= u["codes_used"] <= 16 and 1.0 <= u["perplexity"] <= u["codes_used"] + 1e-9 for u in usage)
    ckpt = sorted((tmp_path / "checkpoints").glob("*.pt"))[-1]
    metrics = recipe.evaluate(_tiny(3), checkpoint=ckpt, data=None, runtime=rt.init("cpu"))
    assert metrics == pytest.approx(summary["test"])


def test_kill_and_resume_gives_the_same_weights(tmp_path: Path) -> None:
    cfg = _tiny(4, checkpoint_every=2)
    runtime = rt.init("cpu")
    full, _ = recipe.train_model(cfg, data=None, run_dir=tmp_path / "a", runtime=runtime, resume=False,
                                 evaluate_world=False)
    recipe.train_model(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=False, evaluate_world=False)
    (tmp_path / "b" / "checkpoints" / "step_00000004.pt").unlink()  # killed after the checkpoint of step 2
    resumed, summary = recipe.train_model(cfg, data=None, run_dir=tmp_path / "b", runtime=runtime, resume=True,
                                          evaluate_world=False)
    assert summary["resumed_from"].endswith("step_00000002.pt")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_retrieval_finetuning_starts_from_the_pretrained_weights(tmp_path: Path) -> None:
    cfg = _tiny(1)
    pretrained = recipe.build_model(cfg)
    with torch.no_grad():  # away from what a fresh build of the same seed gives, so an ignored `init` shows
        for p in pretrained.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    still = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=0.0))
    tuned, _ = recipe.train_model(still, data=None, run_dir=tmp_path / "lr0", runtime=rt.init("cpu"), resume=False,
                                  init=pretrained, tasks=("itm",), evaluate_world=False)
    own = dict(tuned.named_parameters())
    for name, p in pretrained.named_parameters():  # lr 0: only buffers (BN statistics, dictionary) may move
        assert torch.equal(own[name], p), name
    moved, _ = recipe.train_model(_tiny(2), data=None, run_dir=tmp_path / "lr", runtime=rt.init("cpu"), resume=False,
                                  init=pretrained, tasks=("itm",), evaluate_world=False)
    assert not torch.equal(moved.itm_head.weight, before["itm_head.weight"])
    for name, value in pretrained.state_dict().items():  # fine-tuning copies; the demo reuses `pretrained` for QA
        assert torch.equal(value, before[name]), name


def test_retrieval_recalls_against_hand_counts() -> None:
    # 3 images, 4 captions (image of each caption: 0, 0, 1, 2)
    owner = torch.tensor([0, 0, 1, 2])
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3],   # image 0: best caption 1 (its own) -> TR hit at 1
                           [0.8, 0.1, 0.5, 0.2],   # image 1: caption 0 first, own caption 2 second
                           [0.4, 0.3, 0.2, 0.1]])  # image 2: own caption 3 last (rank 4)
    r = retrieval_recalls(scores, owner, ks=(1, 2))
    assert r["tr_r1"] == pytest.approx(100 / 3) and r["tr_r2"] == pytest.approx(200 / 3)
    # caption queries: c0 ranks images 1, 2, 0 (miss at 1 and 2); c1 -> image 0 (hit); c2 -> image 1 (hit);
    # c3 ranks images 0, 1, 2 (its image 2 last)
    assert r["ir_r1"] == pytest.approx(50.0) and r["ir_r2"] == pytest.approx(50.0)
    with pytest.raises(LowlabelError, match="owner"):
        retrieval_recalls(scores, owner[:3])


def test_world_questions_are_true_of_their_scenes() -> None:
    split = world_split(5, 0, 30, world_config(64, 3, 2))
    qa = world_questions(split, 0)
    assert set(qa.kinds) == {"colour", "shape", "count", "relation"}
    for i, text, kind, answer in zip(qa.image.tolist(), qa.questions, qa.kinds, qa.answers.tolist(), strict=True):
        scene, word = split.scenes[i], ANSWERS[answer]
        if kind == "count":
            assert word == ("zero", "one", "two", "three")[len(scene.objects)]
        if kind == "colour":
            assert any(text == f"what colour is the {o.words().split()[2]}?" and o.words().split()[1] == word
                       for o in scene.objects)
        if kind == "relation":
            assert word in ("yes", "no")
    assert 0.2 < sum(ANSWERS[a] == "yes" for a in qa.answers) / sum(k == "relation" for k in qa.kinds) < 0.8


def test_vqa_finetuning_loads_the_pretrained_encoder(tmp_path: Path) -> None:
    cfg = _tiny()
    pretrained = recipe.build_model(cfg)
    with torch.no_grad():
        pretrained.layers[0].query.weight.add_(1.0)
    model = downstream.build_vqa_model(cfg, 5, pretrained, seed=0)
    assert torch.equal(model.encoder.layers[0].query.weight, pretrained.layers[0].query.weight)
    assert model.encoder.neck.dictionary is None
    images = torch.randn(3, 3, 32, 32)
    tok = WordPieceTokenizer(8)
    ids, att = tok(["what colour is it?"] * 4)
    targets = torch.eye(5)[[0, 1, 2, 3]]
    vqa = downstream.VQAConfig(batch_size=2, train=downstream.with_length(downstream.VQAConfig().train, 2, 0))
    summary = downstream.finetune_vqa(model, vqa, images=images, input_ids=ids, attention=att,
                                      image_index=torch.tensor([0, 1, 2, 0]), targets=targets, run_dir=tmp_path,
                                      runtime=rt.init("cpu"))
    assert summary["steps"] == 2
    logits = downstream.vqa_predict(model, images, ids, att, torch.tensor([0, 1, 2, 0]))
    assert logits.shape == (4, 5)
    with pytest.raises(LowlabelError, match="answers"):
        downstream.finetune_vqa(model, vqa, images=images, input_ids=ids, attention=att,
                                image_index=torch.tensor([0, 1, 2, 0]), targets=torch.eye(6)[:4], run_dir=None,
                                runtime=rt.init("cpu"))


def test_build_corpus_rejects_mismatched_lists() -> None:
    with pytest.raises(LowlabelError, match="caption lists"):
        build_corpus([torch.zeros(3, 8, 8)], [["a"], ["b"]], WordPieceTokenizer(8))


def test_summary_json_is_written(tmp_path: Path) -> None:
    recipe.train(_tiny(1), data=None, run_dir=tmp_path, runtime=rt.init("cpu"), resume=False)
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 1
