"""Data for DTC: the LA layout with its list files (HDF5 or NIfTI cases), down-scaling, and the 2+2 patch batches.

LA layout (spec "Datasets"): <root>/<CASE>/mri_norm2.h5 with `image` float32 (x, y, z) and `label` uint8 {0, 1},
plus <root>/train.list and <root>/test.list; the official tree keeps them under `2018LA_Seg_Training Set/`, which
is found automatically. A case may instead be <root>/<CASE>/image.nii.gz (or .nii) with label.nii.gz beside it.
The first `labelled` ids of train.list are the labelled cases (as the official sampler); the others need no label
(an HDF5 without `label`, a NIfTI case without label file), and their labels are not read when present.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.data.io import NIFTI_SUFFIXES, read_h5_volume, read_nifti
from lowlabel.errors import LowlabelError

LA_SUBDIR = "2018LA_Seg_Training Set"
H5_CASE = "mri_norm2.h5"  # the official file name: datasets `image` and (labelled cases) `label`
NIFTI_CASE = ("image.nii.gz", "image.nii")  # NIfTI cases: the image, and label.nii.gz / label.nii beside it


@dataclass
class Case:
    """One volume: image float32 (H, W, D) and label uint8 (H, W, D) in {0, 1} (None when unknown)."""

    name: str
    image: np.ndarray
    label: np.ndarray | None


def check_case(image: np.ndarray, label: np.ndarray | None, source: str, label_source: str | None = None) -> None:
    """Raise a LowlabelError naming `source` (the image file; `label_source` for label problems when the label is
    another file) for a non-3D image, NaN/inf intensities, a label of another shape, label values other than
    {0, 1}, or a label without foreground."""
    if image.ndim != 3:
        raise LowlabelError(f"{source}: image has shape {image.shape}; DTC needs one 3D volume (H, W, D)")
    if not np.isfinite(image).all():
        raise LowlabelError(f"{source}: image holds {int((~np.isfinite(image)).sum())} NaN/inf voxels; "
                            "fix or re-create the volume (z-scored intensities expected)")
    if label is None:
        return
    label_source = label_source or source
    if label.shape != image.shape:
        raise LowlabelError(f"{label_source}: label shape {label.shape} differs from image shape {image.shape}")
    values = np.unique(label)
    if not np.isin(values, (0, 1)).all():
        raise LowlabelError(f"{label_source}: label holds values {values[:8].tolist()}; DTC is binary: map the "
                            "target to 1 and everything else to 0 (the LA preprocessing maps 255 to 1)")
    if not values.any():
        raise LowlabelError(f"{label_source}: label has no foreground voxel (all 0); a labelled or test case needs "
                            "the target marked 1, or move the case to the unlabelled part of train.list")


def la_root(data: str | Path) -> Path:
    """The folder holding train.list/test.list: `data` itself or its `2018LA_Seg_Training Set` subfolder."""
    data = Path(data)
    for root in (data, data / LA_SUBDIR):
        if (root / "train.list").is_file() or (root / "test.list").is_file():
            return root
    raise LowlabelError(f"{data}: no train.list or test.list here or in '{LA_SUBDIR}/'; expected the LA layout "
                        "<root>/<CASE>/mri_norm2.h5 with list files of case ids, one per line")


def case_image(root: Path, name: str) -> Path | None:
    """The image file of case `name` under `root` (mri_norm2.h5, else image.nii.gz / image.nii), None if absent."""
    for fname in (H5_CASE, *NIFTI_CASE):
        if (root / name / fname).is_file():
            return root / name / fname
    return None


def read_list(data: str | Path, split: str) -> list[str]:
    """Case ids of `<root>/<split>.list` (UTF-8, blank lines skipped), checking that every case has an image file."""
    root = la_root(data)
    path = root / f"{split}.list"
    if not path.is_file():
        raise LowlabelError(f"{path}: list file not found; write one case id per line")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LowlabelError(f"{path}: unreadable or not UTF-8 text ({err}); write one case id per line") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise LowlabelError(f"{path}: names no case; write one case id per line")
    missing = [n for n in names if case_image(root, n) is None]
    if missing:
        raise LowlabelError(f"{path}: names {len(missing)} case(s) with no {root}/<CASE>/{H5_CASE} (or "
                            f"{NIFTI_CASE[0]}), e.g. {missing[:3]}; fix the list or add the files")
    return names


def _nifti_label(image_file: Path) -> Path:
    """label.nii.gz (or label.nii) beside a NIfTI case image; the .nii.gz name when neither exists."""
    plain = image_file.with_name("label.nii")
    return plain if plain.is_file() else image_file.with_name("label.nii.gz")


def read_la_case(data: str | Path, name: str, scale: float = 1.0, labelled: bool = True) -> Case:
    """Read case `name` (checked; see `case_image`), resampled by `scale` (see `rescale`). With labelled=False the
    label is not read (Case.label is None), so an unlabelled case needs none."""
    root = la_root(data)
    path = case_image(root, name)
    if path is None:
        raise LowlabelError(f"{root / name}: no {H5_CASE} or {NIFTI_CASE[0]} in this case folder")
    label, label_file = None, path
    if path.name == H5_CASE:
        arrays = read_h5_volume(path, keys=("image", "label") if labelled else ("image",))
        image, label = arrays["image"], arrays.get("label")
    else:
        image, _ = read_nifti(path)
        if labelled:
            label_file = _nifti_label(path)
            if not label_file.is_file():
                raise LowlabelError(f"{label_file}: missing; case {name} is labelled (one of the first `labelled` "
                                    "of train.list, or in test.list) and needs its label volume")
            label, _ = read_nifti(label_file)
    image = np.asarray(image, dtype=np.float32)
    check_case(image, label, str(path), str(label_file))
    image, label = rescale(image, None if label is None else label.astype(np.uint8), scale)
    return Case(name, image, label)


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3D image from `.h5` (dataset `image`, spacing 1) or `.nii`/`.nii.gz` (spacing from the header), checked."""
    path = Path(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        image, spacing = read_nifti(path)
    elif path.suffix.lower() in (".h5", ".hdf5"):
        image, spacing = read_h5_volume(path, keys=("image",))["image"], (1.0, 1.0, 1.0)
    else:
        raise LowlabelError(f"{path}: unknown volume format; give an .h5 (dataset 'image') or a .nii/.nii.gz file")
    image = np.asarray(image, dtype=np.float32)
    check_case(image, None, str(path))
    return image, spacing


def volume_stem(path: Path) -> str:
    """Name for the mask of a segmented volume: the case folder for mri_norm2.h5 / image.nii(.gz), else the file
    name without its extension."""
    if path.name in (H5_CASE, *NIFTI_CASE):
        return path.resolve().parent.name
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def rescale(image: np.ndarray, label: np.ndarray | None, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a volume by `scale` per axis (new size round(size * scale)): image trilinear, label by trilinear
    interpolation of the mask thresholded at 0.5. scale 1 returns the inputs unchanged."""
    if scale == 1.0:
        return image, label
    if not 0.0 < scale <= 1.0:
        raise LowlabelError(f"scale={scale}: must be in (0, 1] (a CPU budget option; 1 = official resolution)")
    size = [max(1, round(s * scale)) for s in image.shape]
    img = F.interpolate(torch.from_numpy(image)[None, None], size=size, mode="trilinear", align_corners=False)
    out_label = None
    if label is not None:
        lab = F.interpolate(torch.from_numpy(label.astype(np.float32))[None, None], size=size, mode="trilinear",
                            align_corners=False)
        out_label = (lab[0, 0] >= 0.5).numpy().astype(np.uint8)
    return img[0, 0].numpy(), out_label


def scaled_patch(patch: Sequence[int], scale: float) -> list[int]:
    """The training patch at `scale`: patch * scale rounded DOWN to a multiple of 16 (V-Net's constraint), >= 16."""
    return [max(16, 16 * math.floor(p * scale / 16 + 1e-9)) for p in patch]


def augment_crop(image: np.ndarray, label: np.ndarray | None, patch: Sequence[int],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Official RandomRotFlip + RandomCrop: rot90 by k in {0..3} in axes (0, 1), flip along axis 0 or 1, zero-pad to
    patch + 3 voxels each side where an axis is shorter than the patch, then a uniform random crop. An unlabelled
    case (label None) gets an all-zero label patch, which no loss reads."""
    if label is None:
        label = np.zeros(image.shape, dtype=np.uint8)
    k, axis = int(rng.integers(4)), int(rng.integers(2))
    image, label = np.flip(np.rot90(image, k), axis), np.flip(np.rot90(label, k), axis)
    pads = [max((p - s) // 2 + 3, 0) if s <= p else 0 for s, p in zip(image.shape, patch, strict=True)]
    if any(pads):
        image = np.pad(image, [(p, p) for p in pads])
        label = np.pad(label, [(p, p) for p in pads])
    starts = [int(rng.integers(s - p + 1)) for s, p in zip(image.shape, patch, strict=True)]
    window = tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))
    return np.ascontiguousarray(image[window]), np.ascontiguousarray(label[window])


class TwoStreamBatches:
    """Batches of `labelled_bs` labelled then `unlabelled_bs` unlabelled augmented patches (TwoStreamBatchSampler).

    Epoch e = n_labelled // labelled_bs steps; labelled cases are shuffled per epoch, unlabelled ones are drawn from
    per-epoch permutations cycled endlessly. Everything depends only on (seed, epoch, step): resumable. Yields
    (image float32 (B, 1, *patch), label int64 (B, *patch)); unlabelled labels are carried but never used.
    """

    def __init__(self, labelled: Sequence[Case], unlabelled: Sequence[Case], patch: Sequence[int], *,
                 labelled_bs: int = 2, unlabelled_bs: int = 2, seed: int = 0) -> None:
        if labelled_bs < 1 or len(labelled) < labelled_bs:
            raise LowlabelError(f"{len(labelled)} labelled case(s) cannot fill batches of {labelled_bs}; "
                                "label more cases or lower labelled_bs")
        if unlabelled_bs > 0 and not unlabelled:
            raise LowlabelError(f"unlabelled_bs={unlabelled_bs} but there are no unlabelled cases; set it to 0 or "
                                "lower --labelled")
        self.labelled, self.unlabelled, self.patch = list(labelled), list(unlabelled), list(patch)
        self.labelled_bs, self.unlabelled_bs, self.seed = labelled_bs, unlabelled_bs, seed
        self.steps_per_epoch = len(self.labelled) // labelled_bs

    def _unlabelled_order(self, epoch: int) -> np.ndarray:
        """Unlabelled indices for epoch `epoch`: that epoch's share of an endless cycle of permutations."""
        need, n = self.steps_per_epoch * self.unlabelled_bs, len(self.unlabelled)
        first, offset = divmod(epoch * need, n) if n else (0, 0)
        perms = [np.random.default_rng([self.seed, 1, c]).permutation(n) for c in range(first, first + need // n + 2)]
        return np.concatenate(perms)[offset : offset + need] if n else np.zeros(0, dtype=np.int64)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.labelled))
        unl = self._unlabelled_order(epoch) if self.unlabelled_bs else np.zeros(0, dtype=np.int64)
        for b in range(start, self.steps_per_epoch):
            rng = np.random.default_rng([self.seed, 2, epoch, b])
            cases = [self.labelled[i] for i in order[b * self.labelled_bs : (b + 1) * self.labelled_bs]]
            cases += [self.unlabelled[i] for i in unl[b * self.unlabelled_bs : (b + 1) * self.unlabelled_bs]]
            pairs = [augment_crop(c.image, c.label, self.patch, rng) for c in cases]
            image = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
            label = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
            yield image, label
