"""Image-text retrieval with SOHO: ITM match probabilities for every (image, caption) pair, and R@K both ways.

The paper ranks all candidates by the ITM "match" probability (spec "Inference"); no retrieval code was released.
Backbone features are computed once per image; the fusion Transformer runs over chunks of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.data import pad_batch
from lowlabel.metrics.retrieval import recall_at_k


@torch.no_grad()
def score_pairs(model: torch.nn.Module, images: Sequence[torch.Tensor], input_ids: torch.Tensor,
                attention: torch.Tensor, *, batch: int = 256, divisor: int = 32,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(N images, M captions) ITM match probabilities softmax(itm)[:, 1] of a SOHO `model` (eval mode, no MVM).

    images: normalised (3, h_i, w_i) tensors; input_ids / attention: (M, L). Images of different sizes are padded
    to a common size once (so every pair sees the same padding as in a batch of all images).
    """
    if not len(images) or not input_ids.shape[0]:
        raise LowlabelError("retrieval needs at least one image and one caption")
    was_training = model.training
    model.eval()
    try:
        padded, valid = pad_batch(list(images), divisor)
        feats = torch.cat([model.backbone.forward_features(padded[i : i + 32].to(device))
                           for i in range(0, len(images), 32)])
        valid = valid.to(device)
        n, m = len(images), input_ids.shape[0]
        img = torch.arange(n).repeat_interleave(m)
        cap = torch.arange(m).repeat(n)
        probs = torch.empty(n * m)
        ids, att = input_ids.to(device), attention.to(device)
        for s in range(0, n * m, batch):
            i, c = img[s : s + batch].to(device), cap[s : s + batch].to(device)
            out = model.fuse(feats, ids[c], att[c], image_index=i, pixel_valid=valid, mvm=False)
            probs[s : s + batch] = torch.softmax(out.itm_logits.float(), dim=1)[:, 1].cpu()
    finally:
        model.train(was_training)
    return probs.view(n, m)


def retrieval_recalls(scores: torch.Tensor, owner: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K in % both ways from (N images, M captions) scores; owner (M,) is each caption's image.

    TR (text retrieval, image queries): a hit when any of the image's captions is in the top K; IR (image
    retrieval, caption queries): when its image is in the top K (spec "Evaluation protocol").
    """
    n, m = scores.shape
    if owner.shape != (m,):
        raise LowlabelError(f"owner must give the image of each of the {m} captions, got shape {tuple(owner.shape)}")
    relevant = owner[None, :] == torch.arange(n)[:, None]
    out = {}
    for k in ks:
        if k <= m:
            out[f"tr_r{k}"] = 100 * float(recall_at_k(scores, relevant, k).mean())
        if k <= n:
            out[f"ir_r{k}"] = 100 * float(recall_at_k(scores.t().contiguous(), relevant.t().contiguous(), k).mean())
    return out
