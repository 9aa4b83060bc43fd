"""Training on complete samples, imputation of missing latents, and k-means on the fused latents."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.runtime import Runtime
from lowlabel.engine.trainer import TrainConfig, Trainer
from lowlabel.errors import LowlabelError
from lowlabel.methods.completer.data import check_views
from lowlabel.methods.completer.losses import cross_view_contrastive, dual_prediction, reconstruction
from lowlabel.methods.completer.model import Completer, pair_key
from lowlabel.metrics.clustering import clustering_scores, kmeans


def check_mask(mask: np.ndarray, n: int, n_views: int) -> np.ndarray:
    """`mask` as a bool (n, n_views) array; a LowlabelError unless it is 0/1 and every row keeps a view."""
    mask = np.asarray(mask)
    if mask.shape != (n, n_views):
        raise LowlabelError(f"mask has shape {mask.shape}, expected ({n}, {n_views}) for the views given")
    if not np.isin(mask, (0, 1)).all():
        raise LowlabelError("mask must hold only 0 (view missing) and 1 (view present)")
    if (mask.sum(axis=1) == 0).any():
        raise LowlabelError(f"{int((mask.sum(axis=1) == 0).sum())} mask row(s) keep no view; every sample needs one")
    return mask.astype(bool)


def step_fn_for(
    *, alpha: float, prediction_start_epoch: int, steps_per_epoch: int
) -> Callable[[torch.nn.Module, Sequence[torch.Tensor], int], dict[str, torch.Tensor]]:
    """Step function for the Trainer on a batch of complete samples (one (B, d_v) tensor per view).

    Returns {'cl': Σ_{s<t} L_cl(z_s, z_t), 'rec': Σ_v MSE, 'pre': Σ_{s<t} L_pre(s, t)} (spec Loss 4, weights λ via
    the trainer); 'pre' (and the predictors' forward) only from epoch `prediction_start_epoch` = step //
    steps_per_epoch on, as in the official code. For two views the sums have one term: the official loss. For
    V > 2 views every view pair contributes (our extension). Loss maths runs in float32 even under autocast.
    """

    def step_fn(model: torch.nn.Module, batch: Sequence[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        xs = list(batch)
        predict = step // steps_per_epoch >= prediction_start_epoch
        zs, x_hats, preds = model(xs, predict=predict)
        zs = [z.float() for z in zs]
        pairs = list(itertools.combinations(range(len(xs)), 2))
        losses = {
            "cl": torch.stack([cross_view_contrastive(zs[s], zs[t], alpha=alpha) for s, t in pairs]).sum(),
            "rec": reconstruction([x.float() for x in x_hats], xs),
        }
        if predict:
            losses["pre"] = torch.stack([
                dual_prediction(zs[s], zs[t], preds[pair_key(s, t)].float(), preds[pair_key(t, s)].float())
                for s, t in pairs
            ]).sum()
        return losses

    return step_fn


@torch.no_grad()
def embed(model: Completer, views: Sequence[np.ndarray], mask: np.ndarray, device: torch.device,
          chunk: int = 8192) -> np.ndarray:
    """Fused latents (n, V * d_z) of every sample, missing views imputed (model put in eval mode), in chunks."""
    model.eval()
    keep = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    out = []
    for start in range(0, keep.shape[0], chunk):
        xs = [torch.from_numpy(x[start : start + chunk]).to(device) for x in views]
        out.append(model.embed(xs, keep[start : start + chunk].to(device)).float().cpu())
    return torch.cat(out).numpy()


def fit_and_cluster(
    views: Sequence[np.ndarray],
    labels: np.ndarray | None,
    mask: np.ndarray,
    *,
    model: Completer,
    epochs: int,
    batch_size: int,
    lr: float,
    alpha: float,
    lambda_pre: float,
    lambda_rec: float,
    prediction_start_epoch: int,
    n_clusters: int,
    kmeans_n_init: int,
    eval_every_epochs: int,
    train: TrainConfig,
    runtime: Runtime,
    run_dir: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train COMPLETER on the complete samples of `views` (masked with `mask`), then cluster all samples.

    views: (n, d_v) float32 per view; mask: (n, V) 0/1. Missing views are zeroed (official), training uses complete
    rows only, Adam(lr) without weight decay, batches reshuffled each epoch, last partial batch kept (dropped only
    when it would hold a single sample, which BatchNorm cannot train on). `train.max_steps`, `eval_every` and
    `checkpoint_every` are derived from epochs. Returns {'assignments', 'embedding', 'scores' (if labels),
    'history' (scores every `eval_every_epochs`), 'summary'}.
    """
    check_views(views, labels, source="fit_and_cluster")
    n = views[0].shape[0]
    keep = check_mask(mask, n, len(views))
    if n_clusters > n:
        raise LowlabelError(f"asked for {n_clusters} clusters but there are only {n} samples")
    views = [np.ascontiguousarray(x * keep[:, v : v + 1], dtype=np.float32) for v, x in enumerate(views)]
    complete = keep.all(axis=1)
    n_complete = int(complete.sum())
    if n_complete < 2:
        raise LowlabelError(f"only {n_complete} sample(s) have every view; training needs at least 2 "
                            "(lower the missing rate)")
    drop_last = n_complete % batch_size == 1
    batches = TensorBatches([torch.from_numpy(x[complete]) for x in views], batch_size, runtime,
                            seed=train.seed, drop_last=drop_last)
    spe = batches.steps_per_epoch
    eval_steps = eval_every_epochs * spe if eval_every_epochs > 0 else epochs * spe  # checkpoints: same steps
    train = dataclasses.replace(train, max_steps=epochs * spe, eval_every=eval_steps, checkpoint_every=eval_steps)
    history: list[dict[str, float]] = []
    last: dict[str, Any] = {}

    def eval_fn(m: torch.nn.Module, step: int) -> dict[str, float]:
        last.update(step=step, embedding=embed(m, views, keep, runtime.device))
        last["assign"] = kmeans(last["embedding"], n_clusters, n_init=kmeans_n_init, seed=train.seed)
        scores = clustering_scores(labels, last["assign"]) if labels is not None else {}
        history.append({"epoch": step // spe, **scores})
        return scores

    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=lr, fused=True),  # one kernel per step, same maths
        step_fn_for(alpha=alpha, prediction_start_epoch=prediction_start_epoch, steps_per_epoch=spe),
        config=train,
        runtime=runtime,
        run_dir=run_dir,
        loss_weights={"rec": lambda_rec, "pre": lambda_pre},
        eval_fn=eval_fn if labels is not None and eval_every_epochs > 0 else None,
        find_unused_parameters=prediction_start_epoch > 0,
    )
    summary = trainer.fit(batches, resume=resume)
    if last.get("step") == train.max_steps:  # the final evaluation already clustered the final model
        embedding, assign = last["embedding"], last["assign"]
    else:
        embedding = embed(model, views, keep, runtime.device)
        assign = kmeans(embedding, n_clusters, n_init=kmeans_n_init, seed=train.seed)
    result: dict[str, Any] = {"assignments": assign, "embedding": embedding, "history": history,
                              "summary": summary, "n_complete": n_complete, "steps_per_epoch": spe}
    if labels is not None:
        result["scores"] = clustering_scores(labels, assign)
    return result
