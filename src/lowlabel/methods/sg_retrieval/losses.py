"""IRSGS equations as pure tensor functions: caption-based surrogate relevance, graph score, MSE objective."""

from __future__ import annotations

import torch

from lowlabel.errors import LowlabelError


def caption_relevance(
    caption_emb: torch.Tensor,
    image_index: torch.Tensor,
    *,
    n_images: int | None = None,
    captions_per_image: int = 5,
    chunk_size: int = 2048,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Surrogate relevance (N, N): rel(i, j) = (1/K^2) sum_{a, b < K} <c_i,a, c_j,b> (spec "Surrogate relevance").

    caption_emb: (M, D) one row per caption (L2-normalised here); image_index: (M,) int, the image of each caption.
    Per image the first K = `captions_per_image` captions in row order are kept; missing slots are zero vectors that
    still count in the K^2, so rel(i, i) = ||sum_a c_i,a||^2 / K^2 < 1 when an image has fewer than K captions.
    Computed as S S^T / K^2 with S (N, D) the per-image sum of kept captions, `chunk_size` rows at a time
    (memory: the output plus chunk_size x N); `out` may be a preallocated (N, N) tensor to fill (e.g. from a
    numpy memmap). Same values as the official mean over the 25 cross-caption cosines, without the (NK x NK) matrix.
    """
    if caption_emb.dim() != 2 or image_index.shape != caption_emb.shape[:1]:
        raise LowlabelError(
            f"caption_emb must be (M, D) and image_index (M,); "
            f"got {tuple(caption_emb.shape)}, {tuple(image_index.shape)}"
        )
    index = image_index.long()
    n = int(index.max()) + 1 if n_images is None else n_images
    if bool((index < 0).any()) or bool((index >= n).any()):
        raise LowlabelError(f"image_index must lie in [0, {n}); got values {int(index.min())}..{int(index.max())}")
    emb = torch.nn.functional.normalize(caption_emb, dim=1)
    order = torch.sort(index, stable=True).indices
    counts = torch.bincount(index, minlength=n)
    first = counts.cumsum(0) - counts
    slot = torch.empty_like(index)
    slot[order] = torch.arange(len(index), device=index.device) - first[index[order]]
    keep = slot < captions_per_image
    summed = emb.new_zeros(n, emb.shape[1]).index_add_(0, index[keep], emb[keep])
    if out is None:
        out = emb.new_empty(n, n)
    elif out.shape != (n, n):
        raise LowlabelError(f"out must be ({n}, {n}); got {tuple(out.shape)}")
    scale = 1.0 / captions_per_image**2
    for start in range(0, n, chunk_size):
        block = summed[start : start + chunk_size] @ summed.T
        out[start : start + chunk_size] = (block * scale).to(out.dtype)
    return out


def pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """score(G_a, G_b) = <z_a, z_b> for unit graph embeddings a, b: (B, H) -> (B,)."""
    return (a * b).sum(-1)


def relevance_mse(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = mean over pairs of (score(G_a, G_b) - rel(a, b))^2 (spec "Losses"); scores, target: (B,) -> scalar."""
    return torch.mean((scores - target.to(scores.dtype)) ** 2)
