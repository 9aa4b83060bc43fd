"""SDD-FIQA recipe pieces: official defaults, smoke step, regressor head shape, trunk initialisation, seeded builds
without global side effects, a tiny train/evaluate round, demo schedule, sharpness baseline, no import circle."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lowlabel.engine import runtime as rt
from lowlabel.engine import schedules
from lowlabel.engine.config import save_config
from lowlabel.engine.recipe import OptimConfig, TrainConfig, lr_factor
from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa import demo, recipe
from lowlabel.methods.sdd_fiqa.evaluation import laplacian_sharpness, smoothed_laplacian_energy, verification_pairs
from lowlabel.methods.sdd_fiqa.model import FaceEmbedder, QualityRegressor

PACKAGE = Path(recipe.__file__).parent


def test_defaults_are_the_official_hyperparameters() -> None:
    cfg = recipe.Config()
    # spec "Training procedure": Adam(1e-4, (0.9, 0.99), 1e-6, wd 5e-4), MultiStepLR [5, 10] of 20 epochs, gamma 0.1
    assert cfg.optim.name == "adam"
    assert cfg.optim.lr == 1e-4
    assert cfg.optim.betas == [0.9, 0.99]
    assert cfg.optim.eps == 1e-6
    assert cfg.optim.weight_decay == 5e-4
    assert cfg.optim.schedule == "step"
    assert cfg.optim.milestones == [5 / 20, 10 / 20]
    assert cfg.optim.gamma == 0.1
    assert cfg.optim.warmup_steps == 0
    assert cfg.train.epochs == 20 and cfg.train.max_steps == 0
    assert cfg.train.seed == 0
    assert cfg.batch_size == 5000
    assert cfg.image_size == 112  # aligned 112x112 crops
    assert cfg.dropout == 0.5  # quality head Dropout(0.5)
    assert cfg.loss == "smooth_l1"  # SmoothL1Loss, beta 1
    # spec "Pseudo-label generation": 24 positives, 24 negatives, 12 repetitions
    assert (cfg.labels.n_pos, cfg.labels.n_neg, cfg.labels.repeats) == (24, 24, 12)
    # the official schedule steps per epoch: 20 epochs of E steps change the lr at steps 5E and 10E
    per_epoch = 37
    total = cfg.train.total_steps(per_epoch)
    for s in (0, 5 * per_epoch - 1, 5 * per_epoch, 10 * per_epoch - 1, 10 * per_epoch, total - 1):
        assert lr_factor(s, total, cfg.optim, per_epoch) == pytest.approx(schedules.step_decay(s // per_epoch,
                                                                                              [5, 10], 0.1))


def test_demo_schedule_is_the_one_it_always_had() -> None:
    # before the shared OptimConfig the demo stepped at epochs [epochs // 4, epochs // 2] of its run
    for quick in (True, False):
        cfg = demo.demo_config(quick)
        per_epoch = cfg.world_identities * cfg.world_per_identity // cfg.batch_size
        total = cfg.train.max_steps
        epochs = total // per_epoch
        old = [schedules.step_decay(s // per_epoch, [epochs // 4, epochs // 2], 0.1) for s in range(total)]
        assert [lr_factor(s, total, cfg.optim, per_epoch) for s in range(total)] == old
        assert cfg.recognizer.optim == OptimConfig(name="adam", lr=2e-3, schedule="cosine")
        assert cfg.recognizer.train.max_steps == total


def test_smoke_case_trains_every_parameter() -> None:
    case = recipe.smoke_case(rt.init("cpu", seed=0))
    losses = case.step_fn(case.model, case.batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in case.model.parameters())


def test_build_model_is_seeded_and_leaves_the_global_generator_alone() -> None:
    cfg = recipe.Config(image_size=16, width=4)
    state = torch.get_rng_state()
    a, b = recipe.build_model(cfg), recipe.build_model(cfg)
    assert torch.equal(torch.get_rng_state(), state)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    cfg.train.seed = 1
    assert not torch.equal(recipe.build_model(cfg).head[-1].weight, a.head[-1].weight)


def test_quality_head_is_the_official_one_and_trunk_is_copied() -> None:
    model = QualityRegressor(width=8, image_size=112)
    assert model.trunk.feature_shape == (64, 7, 7)  # 7x7 map as the official trunks at 112x112
    head_params = sum(p.numel() for p in model.head.parameters())
    assert head_params == 3136 * 2 + 1  # PReLU slopes + Linear weights + bias
    emb = FaceEmbedder(width=8, image_size=112)
    model.init_trunk_from(emb)
    for a, b in zip(model.trunk.state_dict().values(), emb.trunk.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _tiny() -> recipe.Config:
    quiet = {"log_every": 10**9, "checkpoint_every": 10**9}
    return recipe.Config(image_size=16, width=4, batch_size=16, world_identities=10, world_per_identity=4,
                         recognizer=recipe.RecognizerConfig(width=4, embed_dim=8, batch_size=16,
                                                            train=TrainConfig(max_steps=2, **quiet)),
                         train=TrainConfig(epochs=1, **quiet))


def test_train_and_evaluate_on_the_faces_world(tmp_path: Path) -> None:
    runtime = rt.init("cpu", seed=0)
    cfg = _tiny()
    summary = recipe.train(cfg, data=None, run_dir=tmp_path, runtime=runtime, resume=False)
    assert summary["steps"] == 40 // 16  # one epoch: train.epochs x full batches, resolved by the engine
    assert -1 <= summary["spearman_pseudo_vs_true"] <= 1
    checkpoint = next((tmp_path / "checkpoints").glob("step_*.pt"))
    metrics = recipe.evaluate(cfg, checkpoint=checkpoint, data=None, runtime=runtime)
    assert np.isfinite(metrics["spearman_vs_true_quality"])
    save_config(cfg, tmp_path / "config.yaml")  # as `lowlabel train` leaves it
    assert [p.name for p in demo.figures(tmp_path)] == ["evrc_fmr0.01.png"]  # what `lowlabel report` shows
    curve = json.loads((tmp_path / "evrc_fmr0.01.json").read_text())
    # the held-out world of `evaluate`: 20 identities of 10 faces, every pair enumerated
    assert (curve["genuine_pairs"], curve["impostor_pairs"]) == (20 * 45, 200 * 199 // 2 - 20 * 45)
    assert curve["pairs"] == "held-out faces world" and curve["recognizer"] == str(tmp_path / "recognizer.pt")
    cfg.width = 8
    with pytest.raises(LowlabelError, match="does not fit"):
        recipe.evaluate(cfg, checkpoint=checkpoint, data=None, runtime=runtime)


def test_sharpness_and_pairs_by_hand() -> None:
    flat = np.full((1, 8, 8, 3), 100, np.uint8)
    checker = ((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)[None, :, :, None].repeat(3, 3)
    s = laplacian_sharpness(np.concatenate([flat, checker]))
    assert s[0] == 0 and s[1] > 1000
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    gen, imp, gp, ip = verification_pairs(emb, torch.tensor([0, 0, 1]))
    assert gp.tolist() == [[0, 1]] and ip.tolist() == [[0, 2], [1, 2]]
    assert np.isclose(gen[0], 1 / np.sqrt(1.01)) and np.isclose(imp[0], 0.0)


def test_smoothed_laplacian_against_a_per_image_filter_and_under_noise() -> None:
    from scipy.ndimage import gaussian_laplace

    rng = np.random.default_rng(0)
    u, v = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32))
    face = 50 + 150 * np.exp(-(u**2 + v**2) / 0.1)  # a smooth blob
    noisy = np.clip(face + rng.normal(0, 20, face.shape), 0, 255)
    batch = np.stack([face, noisy, face[::-1]]).round().astype(np.uint8)[..., None].repeat(3, axis=3)
    for sigma in (1.0, 3.0):
        got = smoothed_laplacian_energy(batch, sigma)
        # one image at a time, the 2-D LoG of scipy: the batch axis never mixes images
        ref = [np.mean(gaussian_laplace(img[..., 0].astype(np.float64), sigma, mode="reflect") ** 2) for img in batch]
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    plain = laplacian_sharpness(batch)
    # noise of std 20 multiplies the variance of the Laplacian by hundreds (white noise adds 20 * 400); the LoG
    # energy at sigma 3 moves by a few percent
    assert plain[1] > 100 * plain[0]
    energy = smoothed_laplacian_energy(batch, 3.0)
    assert abs(energy[1] / energy[0] - 1) < 0.1


def test_trunk_from_a_recogniser_file_and_a_clear_error_when_it_does_not_fit(tmp_path: Path) -> None:
    from lowlabel.methods.sdd_fiqa.extractors import save_recognizer

    emb = FaceEmbedder(width=4, image_size=16, embed_dim=8)
    save_recognizer(emb, tmp_path / "rec.pt")
    torch.save({"model": {f"embedder.{k}": v for k, v in emb.state_dict().items()}}, tmp_path / "ckpt.pt")
    for source in ("rec.pt", "ckpt.pt"):  # TorchScript, and a Recognizer training checkpoint
        model = QualityRegressor(width=4, image_size=16)
        recipe.load_trunk(model, tmp_path / source)
        for key, value in emb.trunk.state_dict().items():
            assert torch.equal(model.trunk.state_dict()[key], value)
    with pytest.raises(LowlabelError, match=r"rec\.pt: its trunk does not fit"):
        recipe.load_trunk(QualityRegressor(width=8, image_size=16), tmp_path / "rec.pt")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize(("module", "forbidden"), [("recipe", ("demo", "evaluation", "cli")),
                                                   ("evaluation", ("recipe", "demo", "cli")),
                                                   ("data", ("recipe", "demo", "cli"))])
def test_no_import_circle_even_inside_functions(module: str, forbidden: tuple[str, ...]) -> None:
    found = _imports(PACKAGE / f"{module}.py")
    assert not [n for n in found for f in forbidden if n.startswith(f"lowlabel.methods.sdd_fiqa.{f}")]
