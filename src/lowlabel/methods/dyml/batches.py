"""DyML's batches: image sets (in memory or files), the m-per-class sampler of the [H] recipe as a resumable batch
source, and batched random-resized-crop / flip / centre-crop transforms on tensors.

`MPerClassBatches` is a `lowlabel.engine.batches.BatchSource` (its order depends only on (seed, epoch)); it would
serve other metric-learning methods as well and belongs in engine/batches.py (asked of the lead).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lowlabel.engine.runtime import Runtime
from lowlabel.errors import LowlabelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ArrayImages(Dataset):
    """Images held in memory: uint8 (N, C, H, W); item i is image i."""

    def __init__(self, images: torch.Tensor | np.ndarray) -> None:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise LowlabelError(f"images {tuple(images.shape)} {images.dtype}: give uint8 (N, C, H, W)")
        self.images = images
        self.channels = images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.images[torch.as_tensor(indices)])


class FileImages(Dataset):
    """Image files read on demand and resized to `size` x `size` (aspect not kept): item i is uint8 (C, size, size).

    files: a data.LabelledFiles (its channel-order flag applies); grey: read as one channel."""

    def __init__(self, files: object, size: int, grey: bool = False) -> None:
        self.files, self.size, self.grey = files, size, grey
        self.channels = 1 if grey else 3

    def __len__(self) -> int:
        return len(self.files)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        rgb = self.files.image(i)  # type: ignore[attr-defined]
        img = Image.fromarray(rgb).convert("L" if self.grey else "RGB").resize((self.size, self.size),
                                                                               Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(array[None] if self.grey else array.transpose(2, 0, 1).copy())


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 255] float (B, C, H, W) -> (x / 255 - mean) / std per channel (one channel: the means of the
    lists)."""
    c = images.shape[1]
    m = torch.tensor(mean if len(mean) == c else [sum(mean) / len(mean)] * c, device=images.device)
    s = torch.tensor(std if len(std) == c else [sum(std) / len(std)] * c, device=images.device)
    return (images.float() / 255 - m[:, None, None]) / s[:, None, None]


def _warp(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    grid = F.affine_grid(theta.to(images.dtype), [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(images: torch.Tensor, size: int, *, scale: Sequence[float], ratio: Sequence[float],
                        flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per image: a crop of area fraction U(scale) and aspect exp(U(log ratio)) (sides clipped to the image) at a
    uniform position, resampled bilinearly to size x size, mirrored with probability 1/2 when `flip`.
    images: float (B, C, H, W); all random numbers come from `generator` (CPU)."""
    b = images.shape[0]
    u = torch.rand(b, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - w)  # crop centre in [-1, 1] coordinates, crop inside the image
    cy = (2 * u[:, 3] - 1) * (1 - h)
    sign = torch.where((u[:, 4] < 0.5) & flip, -1.0, 1.0).to(torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * sign, cx, h, cy
    return _warp(images, theta.to(images.device), size)


def centre_crop(images: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """The test transform "resize to `resize`, centre-crop `size`" in one resampling: the central size/resize
    fraction of each image at size x size. Identity when the images are already size x size and size == resize."""
    if size == resize and images.shape[-1] == images.shape[-2] == size:
        return images
    f = size / resize
    theta = torch.tensor([[f, 0.0, 0.0], [0.0, f, 0.0]], device=images.device).expand(images.shape[0], 2, 3)
    return _warp(images, theta, size)


class MPerClassBatches:
    """m images from each of `classes_per_batch` classes per batch (the [H] sampler on fine labels), resumable.

    Epoch e: with a generator seeded by (seed, e), the classes are visited in shuffled rounds; each visit takes the
    class's next m images from its own shuffled list (reshuffled when used up; drawn with replacement when the class
    has fewer than m). Consecutive visits form the batches; `steps_per_epoch` = N // batch_size // world_size, each
    rank taking every world_size-th batch. A batch is (images float (B, C, S, S) normalised and augmented, labels
    (B, L) int64); the augmentation's random numbers come from (seed, epoch, batch), so a resumed run sees the same
    batches. The loading runs through a DataLoader (`num_workers`) over `images` (ArrayImages or FileImages).
    """

    def __init__(self, images: Dataset, labels: np.ndarray, runtime: Runtime, *, m: int, classes_per_batch: int,
                 size: int, scale: Sequence[float], ratio: Sequence[float], flip: bool, mean: Sequence[float],
                 std: Sequence[float], seed: int = 0, num_workers: int = 0) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 2 or labels.shape[0] != len(images):  # type: ignore[arg-type]
            raise LowlabelError(f"labels {labels.shape} need one row per image ({len(images)})")  # type: ignore[arg-type]
        classes, inverse = np.unique(labels[:, 0], return_inverse=True)
        if classes_per_batch > len(classes) or m < 1 or classes_per_batch < 1:
            raise LowlabelError(f"classes_per_batch={classes_per_batch}, m_per_class={m}: need 1 <= "
                                f"classes_per_batch <= the {len(classes)} fine training classes and m >= 1")
        self.members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        self.images, self.labels, self.runtime = images, torch.from_numpy(labels), runtime
        self.m, self.cpb, self.batch_size = m, classes_per_batch, m * classes_per_batch
        self.size, self.scale, self.ratio, self.flip = size, tuple(scale), tuple(ratio), flip
        self.mean, self.std, self.seed, self.num_workers = tuple(mean), tuple(std), seed, num_workers
        self.steps_per_epoch = labels.shape[0] // self.batch_size // runtime.world_size

    def order(self, epoch: int) -> list[list[int]]:
        """All batches of `epoch` (every rank's), as lists of image indices."""
        rng = np.random.default_rng([self.seed, epoch])
        pools = [rng.permutation(idx) for idx in self.members]
        cursor = [0] * len(pools)
        n_batches = self.steps_per_epoch * self.runtime.world_size
        flat: list[int] = []
        while len(flat) < n_batches * self.batch_size:
            for c in rng.permutation(len(pools)):
                pool = pools[c]
                if len(pool) < self.m:
                    flat += rng.choice(pool, self.m, replace=True).tolist()
                    continue
                if cursor[c] + self.m > len(pool):
                    pools[c], cursor[c] = rng.permutation(pool), 0
                flat += pools[c][cursor[c] : cursor[c] + self.m].tolist()
                cursor[c] += self.m
        return [flat[b * self.batch_size : (b + 1) * self.batch_size] for b in range(n_batches)]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        world, rank = self.runtime.world_size, self.runtime.rank
        mine = self.order(epoch)[rank::world][: self.steps_per_epoch]
        loader = DataLoader(self.images, batch_sampler=mine[start:], num_workers=self.num_workers,
                            collate_fn=torch.stack)
        for b, raw in enumerate(loader, start=start):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + b * world + rank)
            x = normalise(raw, self.mean, self.std)
            x = random_resized_crop(x, self.size, scale=self.scale, ratio=self.ratio, flip=self.flip,
                                    generator=generator)
            yield x, self.labels[torch.as_tensor(mine[b])]


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: Dataset, *, size: int, resize: int, mean: Sequence[float],
                 std: Sequence[float], batch_size: int = 256, num_workers: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, dim) embeddings of every image with the test transform (centre crop), in eval mode (mode restored)."""
    was = model.training
    model.eval()
    out = []
    try:
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=torch.stack)
        for raw in loader:
            x = centre_crop(normalise(raw.to(device), mean, std), size, resize)
            out.append(model(x).float().cpu())
    finally:
        model.train(was)
    if not out:
        raise LowlabelError("no image to embed")
    return torch.cat(out)
