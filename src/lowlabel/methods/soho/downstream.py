"""SOHO downstream: VQA-style answer classification on top of a (pre-trained) SOHO encoder, through the engine.

Official VQA fine-tuning (spec "Training procedure"): the neck without dictionary, gate or masking
(`SimpleVDforVQA`); backbone, neck conv/BN/LN and Transformer loaded by name from the pre-trained model
(strict=False); head Linear(d, 4d)-ReLU-Dropout(0.5)-Linear(4d, A) on output 0; loss = BCE-with-logits(mean) x A
against soft scores; grad clip 4; lr x0.1 at epochs 12 and 16 of 20.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.soho import losses
from lowlabel.methods.soho.model import SOHO, SOHOForVQA
from lowlabel.methods.soho.recipe import Config, build_encoder

VQA_EPOCHS = 20


@dataclass
class VQAConfig:
    """Official VQA fine-tuning schedule (`soho_res18_vqa.py`); batch size per process."""

    batch_size: int = 32
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=VQA_EPOCHS, grad_clip=4.0, amp=False,
                                                                   log_every=50, checkpoint_every=10**9))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adamw", lr=1e-4, betas=[0.9, 0.999], eps=1e-6, weight_decay=0.01, schedule="step",
        milestones=[12 / VQA_EPOCHS, 16 / VQA_EPOCHS], gamma=0.1, warmup_steps=1000))


def build_vqa_model(cfg: Config, num_answers: int, pretrained: SOHO | None = None, seed: int | None = None
                    ) -> SOHOForVQA:
    """The VQA model of `cfg`; with `pretrained`, every encoder weight whose name exists without the dictionary
    (backbone, neck conv/BN/LN, text embeddings, Transformer, ITM head) is copied, as officially."""
    encoder = build_encoder(cfg, use_dictionary=False, seed=seed)
    if pretrained is not None:
        own = encoder.state_dict()
        state = {k: v for k, v in pretrained.state_dict().items() if k in own and own[k].shape == v.shape}
        encoder.load_state_dict(state, strict=False)
    gen = torch.Generator().manual_seed(cfg.train.seed if seed is None else seed)
    return SOHOForVQA(encoder, num_answers=num_answers, generator=gen)


def vqa_step_fn(images: torch.Tensor) -> Any:
    """step_fn over TensorBatches of (question ids, attention, image index, soft targets); images (N, 3, H, W) are
    the normalised images the questions point into."""

    def step_fn(model: torch.nn.Module, batch: Sequence[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        ids, attention, image, targets = batch
        logits = model(images.to(ids.device)[image], ids, attention)
        return {"vqa": losses.vqa_loss(logits, targets)}

    return step_fn


def finetune_vqa(model: SOHOForVQA, vqa: VQAConfig, *, images: torch.Tensor, input_ids: torch.Tensor,
                 attention: torch.Tensor, image_index: torch.Tensor, targets: torch.Tensor, run_dir: Path | None,
                 runtime: Runtime, resume: bool = False) -> dict:
    """Fine-tune `model` (in place) on questions (ids/attention (Q, L), image_index (Q,), soft targets (Q, A))."""
    if targets.shape[1] != model.head.mlp[-1].out_features:
        raise LowlabelError(f"{targets.shape[1]} answers in the targets, the head has "
                            f"{model.head.mlp[-1].out_features}")
    batches = TensorBatches([input_ids, attention, image_index, targets], vqa.batch_size, runtime,
                            seed=vqa.train.seed, drop_last=True)
    trainer = Trainer(model, vqa_step_fn(images), config=vqa.train, optim=vqa.optim, runtime=runtime, run_dir=run_dir)
    return trainer.fit(batches, resume=resume)


@torch.no_grad()
def vqa_predict(model: SOHOForVQA, images: torch.Tensor, input_ids: torch.Tensor, attention: torch.Tensor,
                image_index: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Answer logits (Q, A) in eval mode."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [model(images[image_index[s : s + batch]].to(device), input_ids[s : s + batch].to(device),
                     attention[s : s + batch].to(device)).float().cpu()
               for s in range(0, input_ids.shape[0], batch)]
    finally:
        model.train(was)
    return torch.cat(out)


def with_length(train: TrainConfig, steps: int, seed: int) -> TrainConfig:
    """`train` with a run of `steps` optimiser steps and `seed`."""
    return dataclasses.replace(train, max_steps=steps, seed=seed)
