"""DyML's Cross-Scale Learning loss (CSL) as pure functions of tensors (spec: "Loss: Cross-Scale Learning")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lowlabel.errors import LowlabelError


def proxy_hierarchy(train_labels: torch.Tensor, n_proxies: int) -> torch.Tensor:
    """Each fine class's labels at every level: (P, L) with row c = (c, Y(c)^middle, Y(c)^coarse, ...).

    train_labels: (T, L) integer labels (fine first), the whole training table or its unique rows. Fine labels must
    be 0..P-1 (one proxy each, every one present) and each fine class must have one label per coarser level; a
    LowlabelError names the first fine class that breaks either rule.
    """
    if train_labels.dim() != 2 or train_labels.shape[0] == 0:
        raise LowlabelError(f"train_labels has shape {tuple(train_labels.shape)}; give the (T, levels) training "
                            "label table, fine labels first")
    fine = train_labels[:, 0].long()
    if int(fine.min()) < 0 or int(fine.max()) >= n_proxies:
        raise LowlabelError(f"fine training labels span {int(fine.min())}..{int(fine.max())} but there are "
                            f"{n_proxies} proxies; remap fine labels to 0..{n_proxies - 1} (one proxy per class)")
    counts = torch.bincount(fine, minlength=n_proxies)
    if bool((counts == 0).any()):
        missing = int((counts == 0).nonzero()[0])
        raise LowlabelError(f"fine class {missing} has a proxy but no row in train_labels; every proxy needs its "
                            "middle/coarse labels from the training table")
    table = torch.empty(n_proxies, train_labels.shape[1], dtype=torch.long, device=train_labels.device)
    table[fine] = train_labels.long()  # one of the rows of each class wins; the check below finds disagreement
    clash = (table[fine] != train_labels.long()).any(1)
    if bool(clash.any()):
        c = int(fine[clash.nonzero()[0]])
        raise LowlabelError(f"fine class {c} has more than one coarser label in train_labels; each fine class "
                            "needs exactly one middle and one coarse label (a tree-shaped hierarchy)")
    return table


def csl_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    train_labels: torch.Tensor,
    margins: Sequence[float] = (0.25, 0.35, 0.45),
    scale: float = 32.0,
) -> torch.Tensor:
    """Cross-Scale Learning loss L_CSL = Σ_l L_l (scalar; spec "Loss: Cross-Scale Learning", reduce "sum").

    embeddings: (N, D); labels: (N, L) integer (fine, middle, coarse); proxies: (P, D) un-normalised, one per fine
    class; train_labels: (T, L) the training label table from which each fine class's coarser labels Y(c)^l are
    read (see `proxy_hierarchy`). With s_ic = ê_i · p̂_c (both L2-normalised), s_i^+ = s_{i, y_i^fine} and the
    level-l negatives N_l(i) = {c : Y(c)^l != y_i^l}:
        L_l = mean_i softplus(logsumexp_{c in N_l(i)} (γ s_ic) - γ s_i^+ + γ m_l)
            = mean_i log(1 + Σ_{c in N_l(i)} exp(γ (s_ic - s_i^+ + m_l))),
    γ = `scale`, m_l = `margins[l]`. A sample with no negative at some level contributes 0 to that level's mean.
    The official repository has no loss; this follows the re-implementation its tracker points to ([H]
    `CSLLoss`). Deviations: embeddings are L2-normalised here ([H] expects the network to have done it; the
    value is the same for unit inputs); the hierarchy is read per fine class instead of from `unique` rows.
    Computed in at least float32.
    """
    if embeddings.dim() != 2 or proxies.dim() != 2 or embeddings.shape[1] != proxies.shape[1]:
        raise LowlabelError(f"embeddings {tuple(embeddings.shape)} and proxies {tuple(proxies.shape)} must be "
                            "(N, D) and (P, D)")
    n_levels = len(margins)
    if labels.shape != (embeddings.shape[0], n_levels) or train_labels.dim() != 2 or \
            train_labels.shape[1] != n_levels:
        raise LowlabelError(f"labels {tuple(labels.shape)} and train_labels {tuple(train_labels.shape)} need one "
                            f"column per margin ({n_levels}), fine first; labels one row per embedding "
                            f"({embeddings.shape[0]})")
    table = proxy_hierarchy(train_labels.to(labels.device), proxies.shape[0])
    labels = labels.long()
    if int(labels[:, 0].min()) < 0 or int(labels[:, 0].max()) >= proxies.shape[0]:
        raise LowlabelError(f"fine labels of the batch must lie in 0..{proxies.shape[0] - 1} (one proxy each)")
    dtype = torch.promote_types(embeddings.dtype, torch.float32)
    sims = F.normalize(embeddings.to(dtype), dim=1) @ F.normalize(proxies.to(dtype), dim=1).t()  # (N, P)
    logits = scale * sims
    positive = logits.gather(1, labels[:, :1]).squeeze(1)  # γ s_i^+
    total = logits.new_zeros(())
    for level, margin in enumerate(margins):
        negative = table[:, level][None, :] != labels[:, level : level + 1]  # (N, P): c in N_l(i)
        has = negative.any(1)
        # rows without negatives get zeros instead of -inf so that logsumexp stays finite (no NaN gradient)
        masked = torch.where(has[:, None], logits.masked_fill(~negative, -torch.inf), torch.zeros_like(logits))
        term = F.softplus(torch.logsumexp(masked, dim=1) - positive + scale * margin)
        total = total + torch.where(has, term, torch.zeros_like(term)).mean()
    return total
