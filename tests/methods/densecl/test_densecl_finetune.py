"""Fine-tuning evaluation: the FCN head, the mIoU with ignored pixels, whole-network fine-tuning that learns, the
start backbones of a run, COCO polygons as semantic masks, and `lowlabel densecl finetune` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from lowlabel.errors import LowlabelError
from lowlabel.methods.densecl.cli import app
from lowlabel.methods.densecl.data import IGNORE, Labelled, coco_labelled
from lowlabel.methods.densecl.finetune import FinetuneConfig, finetune, segmentation_miou, start_backbone
from lowlabel.methods.densecl.model import build_backbone
from lowlabel.methods.densecl.recipe import AugConfig, Config, ModelConfig, build_model
from lowlabel.nn.heads import fcn_head

TINY = dict(arch="resnet18", small_stem=True, width=4)


def test_fcn_head_shape_and_parameter_count() -> None:
    head = fcn_head(32, 5, channels=8)
    assert head(torch.randn(2, 32, 3, 4)).shape == (2, 5, 3, 4)
    # 3x3 conv 32->8 without bias, BN(8) weight+bias, 1x1 conv 8->5 with bias
    assert sum(p.numel() for p in head.parameters()) == 32 * 8 * 9 + 2 * 8 + 8 * 5 + 5
    with pytest.raises(ValueError):
        fcn_head(32, 5, num_convs=0)


class _Oracle(nn.Module):
    """Logits that put all mass on a fixed label map (N, H, W), whatever the images."""

    def __init__(self, labels: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        self.labels, self.n_classes, self.seen = labels, n_classes, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        part = self.labels[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return nn.functional.one_hot(part, self.n_classes).permute(0, 3, 1, 2).float()


def test_miou_counts_the_whole_set_and_leaves_ignored_pixels_out() -> None:
    masks = torch.tensor([[[0, 0], [1, IGNORE]], [[1, 1], [2, 2]]])
    pred = torch.tensor([[[0, 1], [1, 2]], [[1, 1], [2, 0]]])
    data = Labelled(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), masks, 3)
    # by hand over the 7 kept pixels: class 0 TP 1, FP 1, FN 1 -> 1/3; class 1 TP 3, FP 1 -> 3/4; class 2 TP 1, FN 1
    # -> 1/2 (the ignored pixel's prediction 2 is not a false positive)
    assert segmentation_miou(_Oracle(pred, 3), data, batch_size=1) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def _colour_scenes(n: int, size: int = 16) -> Labelled:
    """Left half red (class 1) or blue (class 2) by scene parity, right half grey background: learnable."""
    images = torch.full((n, 3, size, size), 128, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        colour = (230, 20, 20) if i % 2 == 0 else (20, 20, 230)
        images[i, :, :, : size // 2] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
        masks[i, :, : size // 2] = 1 + i % 2
    return Labelled(images, masks, 3)


def test_finetune_trains_the_whole_network_learns_and_repeats(cpu_runtime) -> None:
    torch.manual_seed(0)
    data = _colour_scenes(8)
    backbone = build_backbone(**TINY)
    state = torch.random.get_rng_state()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = FinetuneConfig(steps=30, batch_size=8, lr=0.05, head_channels=8, seed=3)
    model = finetune(backbone, data, cfg=cfg, runtime=cpu_runtime)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    changed = [k for k, v in backbone.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) == sum(v.is_floating_point() for v in before.values())  # every weight and BN stat moved
    assert segmentation_miou(model, data) > 0.7  # background only: 1/3; one colour class missed: <= 0.56
    fresh = build_backbone(**TINY)
    fresh.load_state_dict(before)
    again = finetune(fresh, data, cfg=cfg, runtime=cpu_runtime)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def _tiny_run(tmp_path: Path, lam: float) -> tuple[Path, nn.Module]:
    cfg = Config(model=ModelConfig(**TINY, hid_dim=16, out_dim=8), aug=AugConfig(image_size=16), queue_size=16,
                 loss_lambda=lam)
    run = tmp_path / f"run{lam}"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.structured(cfg), run / "config.yaml")
    torch.manual_seed(7)
    model = build_model(cfg)
    torch.save({"model": model.state_dict(), "step": 1}, run / "checkpoints" / "step_00000001.pt")
    return run, model


def test_start_backbones_of_a_run(tmp_path: Path) -> None:
    run, model = _tiny_run(tmp_path, 0.5)
    expected = model.encoder_q.backbone.state_dict()
    for where in (run, run / "checkpoints" / "step_00000001.pt"):
        backbone, name = start_backbone(where)
        assert name == "densecl"
        assert all(torch.equal(v, expected[k]) for k, v in backbone.state_dict().items())
    random_a, name = start_backbone(run, random_init=True, seed=1)
    random_b, _ = start_backbone(run, random_init=True, seed=1)
    assert name == "random init"
    assert not torch.equal(random_a.conv1.weight, expected["conv1.weight"])
    assert torch.equal(random_a.conv1.weight, random_b.conv1.weight)
    assert start_backbone(_tiny_run(tmp_path, 0.0)[0])[1] == "mocov2"
    loose = tmp_path / "loose" / "step.pt"
    loose.parent.mkdir()
    loose.write_bytes((run / "checkpoints" / "step_00000001.pt").read_bytes())
    with pytest.raises(LowlabelError, match=r"no config\.yaml"):
        start_backbone(loose)


def _coco(root: Path) -> None:
    """One 8x6 image: a polygon of category 7 (class 2 of [3, 7]) over a bigger one of category 3, and a crowd RLE."""
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    Image.fromarray(np.full((6, 8, 3), 90, dtype=np.uint8)).save(root / "train" / "a.png")
    rle = np.zeros((6, 8), dtype=np.uint8)
    rle[5, 6:8] = 1  # bottom-right two pixels; column-major runs: 6*6 + 5 zeros, 1 one, 5 zeros, 1 one
    counts = [41, 1, 5, 1]
    payload = {
        "images": [{"id": 4, "file_name": "a.png", "height": 6, "width": 8}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 4, "category_id": 7, "area": 4.0, "iscrowd": 0,
             "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]], "bbox": [1, 1, 2, 2]},
            {"id": 2, "image_id": 4, "category_id": 3, "area": 20.0, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 4, 0, 4]], "bbox": [0, 0, 5, 4]},
            {"id": 3, "image_id": 4, "category_id": 3, "area": 2.0, "iscrowd": 1,
             "segmentation": {"counts": counts, "size": [6, 8]}, "bbox": [6, 5, 2, 1]},
        ],
    }
    (root / "annotations" / "instances_train.json").write_text(json.dumps(payload))


def test_coco_polygons_become_semantic_masks(tmp_path: Path) -> None:
    _coco(tmp_path)
    data, names = coco_labelled(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", size=6)
    assert names == ["dog", "cat"] and data.n_classes == 3
    expected = np.zeros((6, 8), dtype=np.int64)
    expected[0:5, 0:6] = 1  # Pillow fills polygon vertices inclusively: x 0..5, y 0..4
    expected[1:4, 1:4] = 2  # the smaller object is drawn last
    expected[5, 6:8] = IGNORE
    assert data.images.shape == (1, 3, 6, 6)
    assert torch.equal(data.masks[0], torch.from_numpy(expected[:, 1:7]))  # centre crop of the 8 columns


def test_coco_errors_name_the_file(tmp_path: Path) -> None:
    _coco(tmp_path)
    ann = tmp_path / "annotations" / "instances_train.json"
    payload = json.loads(ann.read_text())
    payload["images"][0]["width"] = 9
    ann.write_text(json.dumps(payload))
    with pytest.raises(LowlabelError, match=r"a\.png"):
        coco_labelled(ann, tmp_path / "train", size=6)
    ann.write_text(json.dumps({"images": []}))
    with pytest.raises(LowlabelError, match="not a COCO instances file"):
        coco_labelled(ann, tmp_path / "train", size=6)


def test_cli_finetune_on_the_shapes_world(tmp_path: Path) -> None:
    run, _ = _tiny_run(tmp_path, 0.5)
    out = tmp_path / "result.json"
    args = ["finetune", "--checkpoint", str(run), "--labelled", "4", "--size", "32", "--steps", "2",
            "--set", "batch_size=4", "--out", str(out), "--threads", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["start"] == "densecl" and saved["labelled"] == 4 and saved["test_images"] == 400
    assert saved["finetune"]["batch_size"] == 4 and 0.0 <= saved["miou"] <= 1.0
