"""The paper's backbone setting in the faces world: a ResNet-18 pretrained on identity classification, the in-world
stand-in for the MS-Celeb-1M face-recognition checkpoint the paper fine-tunes (spec "Architecture" 1).

The identities come from their own world (seed + `SEED_OFFSET`; the expression worlds use seed and seed + 10,000), so
they are disjoint from the expression train and test identities, as MS-Celeb-1M's are from RAF-DB's. Every image
shows one of the seven expressions at random: the classifier learns identity across expressions, as a face
recogniser does. Training is the recipe's own (a linear head on identity labels, softmax cross-entropy, the random
flip); the backbone is saved alone in torchvision layout, so `Config.pretrained` loads it as it loads a user's
`resnet18_msceleb.pth`. A folder is reused when its `pretrain.json` records the same settings (one backbone per seed,
shared by every head).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lowlabel.engine.checkpoint import atomic_save
from lowlabel.engine.recipe import OptimConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError
from lowlabel.files import read_json, write_json
from lowlabel.methods.fdrl import data as fdata
from lowlabel.methods.fdrl import recipe

SEED_OFFSET = 20_000
HELD_OUT = 2  # images per identity kept out of training, for the identity accuracy


@dataclass(frozen=True)
class PretrainSettings:
    """Identity pretraining: `identities` x `images_per_identity` training faces (plus HELD_OUT each), `epochs` of
    Adam at `lr` with a cosine decay, batch and image size of the expression config."""

    identities: int = 150
    images_per_identity: int = 20
    epochs: int = 8
    lr: float = 2e-3


def identity_splits(world: recipe.WorldConfig, settings: PretrainSettings) -> tuple[recipe.Split, recipe.Split]:
    """Training faces and HELD_OUT held-out faces per identity of the pretraining world of `world.seed`, labelled by
    identity (classes "id0", "id1", ...); size, intensities, degradations and expression table as `world`."""
    per = settings.images_per_identity + HELD_OUT
    drawn = fdata.faces_world(settings.identities, per, seed=world.seed + SEED_OFFSET, size=world.size,
                              intensity_range=world.intensity_range, degraded=world.degraded,
                              expressions=world.expressions)
    classes = tuple(f"id{i}" for i in range(settings.identities))
    train = torch.arange(len(drawn["identities"])) % per < settings.images_per_identity
    return (recipe.Split(drawn["images"][train], drawn["identities"][train], classes),
            recipe.Split(drawn["images"][~train], drawn["identities"][~train], classes))


def pretrain_backbone(cfg: recipe.Config, settings: PretrainSettings, *, out: Path,
                      runtime: Runtime) -> tuple[Path, dict]:
    """Pretrain the backbone of `cfg` (a ResNet-18 of its width and image size) on identities of its world's seed and
    save it as out/backbone.pt; returns the path and the record of out/pretrain.json (settings, identity accuracy on
    the held-out faces, seconds). Reuses both when out/pretrain.json records the same settings."""
    out = Path(out)
    key = {"backbone": cfg.backbone, "width": cfg.width, "image_size": cfg.image_size, "batch_size": cfg.batch_size,
           "world": dataclasses.asdict(cfg.world), "seed": cfg.train.seed, **dataclasses.asdict(settings)}
    path, meta = out / "backbone.pt", out / "pretrain.json"
    if path.is_file() and meta.is_file():
        with contextlib.suppress(LowlabelError):  # an unreadable record is a stale cache: pretrain again
            record = read_json(meta, "pretraining record")
            if isinstance(record, dict) and record.get("settings") == key:
                return path, record
    t0 = time.perf_counter()
    train_split, held_out = identity_splits(cfg.world, settings)
    id_cfg = dataclasses.replace(
        cfg, head="linear", pretrained="",
        train=dataclasses.replace(cfg.train, epochs=settings.epochs, max_steps=0, checkpoint_every=10**9),
        optim=OptimConfig(name="adam", lr=settings.lr, betas=[0.9, 0.999], schedule="cosine"))
    model, summary = recipe.train_model(id_cfg, data=None, run_dir=out, runtime=runtime, resume=False,
                                        train_split=train_split, test=held_out, figures=False)
    atomic_save(model.backbone.state_dict(), path)
    record = {"settings": key, "identity_accuracy": summary["test"]["accuracy"],
              "seconds": time.perf_counter() - t0}
    write_json(meta, record)
    return path, record
