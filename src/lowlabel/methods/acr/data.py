"""Readers for ACR: ImageFolder splits (CUB-200-2011, MIT Indoor-67, FER2013), zipped class folders (Omniglot),
the official class-balanced labelled split, labelled-subset lists, and image loading as the official transforms.

Order matters: the official split permutes the training set in torchvision `ImageFolder` order (class folders
sorted by name, files sorted within each, via a sorted `os.walk`), so every reader lists images in that order and
`per_class_split` with the same seed picks the same labelled images as the official code.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lowlabel.data.io import read_image
from lowlabel.errors import LowlabelError
from lowlabel.files import read_text, write_text

if TYPE_CHECKING:
    import torch

# torchvision's IMG_EXTENSIONS (ImageFolder), compared case-insensitively
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images with class labels. names[i] is the image's key "class_dir/.../file" (POSIX), used by labelled-subset
    lists; labels (N,) int64 index `classes`; files[i] is the image file, or the zip archive holding member
    members[i] when the set was read from archives (members is None for plain folders)."""

    classes: list[str]
    names: list[str]
    labels: np.ndarray
    files: list[Path]
    members: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> np.ndarray:
        """Image i decoded as uint8 RGB (H, W, 3)."""
        if self.members is None:
            return read_image(self.files[i])
        return read_zip_image(self.files[i], self.members[i])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        idx = [int(i) for i in indices]
        return ImageSet(self.classes, [self.names[i] for i in idx], self.labels[idx],
                        [self.files[i] for i in idx], None if self.members is None else [self.members[i] for i in idx])


def read_zip_image(archive: Path, member: str, zf: zipfile.ZipFile | None = None) -> np.ndarray:
    """Decode one zip member as uint8 RGB (H, W, 3), with errors naming archive and member. `zf`: the archive,
    already open (to read many members without re-reading the archive's directory)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with contextlib.ExitStack() as stack:
            zf = zf or stack.enter_context(zipfile.ZipFile(archive))
            with Image.open(io.BytesIO(zf.read(member))) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (KeyError, zipfile.BadZipFile, UnidentifiedImageError, OSError) as err:
        raise LowlabelError(f"{archive}:{member}: cannot read this image ({err}); re-download the archive") from None


def _is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def read_image_folder(root: str | Path) -> ImageSet:
    """An ImageFolder split `root/<class>/**/<image>` in torchvision order. Hidden files and folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise LowlabelError(f"{root}: folder not found; expected <split>/<class_name>/<image files>")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise LowlabelError(f"{root}: has no class folders; expected <split>/<class_name>/<image files>")
    names, labels = [], []
    for c, cls in enumerate(classes):
        found = []
        for folder, _, files in sorted(os.walk(root / cls, followlinks=True)):
            rel = Path(folder).relative_to(root).as_posix()
            if not any(part.startswith(".") for part in rel.split("/")):
                found += [f"{rel}/{f}" for f in sorted(files) if _is_image(f)]
        if not found:
            raise LowlabelError(f"{root / cls}: class folder holds no image ({', '.join(EXTENSIONS)}); remove it "
                                "or add its images")
        names += found
        labels += [c] * len(found)
    return ImageSet(classes, names, np.asarray(labels, dtype=np.int64), [root / n for n in names])


def read_split_folders(root: str | Path, splits: Sequence[str] = ("train", "test")) -> dict[str, ImageSet]:
    """`root/<split>/<class>/...` for each split (e.g. FER2013 train/validation/test), with one class list."""
    root = Path(root)
    out = {s: read_image_folder(root / s) for s in splits}
    first = out[splits[0]].classes
    for s in splits[1:]:
        if out[s].classes != first:
            extra = sorted(set(out[s].classes) ^ set(first))
            raise LowlabelError(f"{root}: class folders of '{s}' differ from '{splits[0]}' ({extra[:5]}); every split "
                                "needs the same class folders, or class indices would not match")
    return out


def _find_dataset(data_root: Path, folder: str) -> Path:
    for base in (data_root / folder, data_root):
        if base.is_dir():
            return base
    raise LowlabelError(f"{data_root}: folder not found; give the folder holding '{folder}/'")


def _read_listed(base: Path, images: str, listing: dict[str, bool], list_file: str) -> dict[str, ImageSet]:
    """Train/test ImageSets from an official image folder and a {relative path: is_train} listing."""
    out = {}
    for split, flag in (("train", True), ("test", False)):
        names = sorted((n for n, t in listing.items() if t == flag), key=lambda n: (n.split("/")[0], n))
        classes = sorted({n.split("/")[0] for n in listing})
        lookup = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([lookup[n.split("/")[0]] for n in names], dtype=np.int64)
        missing = [n for n in names if not (base / images / n).is_file()]
        if missing:
            raise LowlabelError(f"{list_file}: lists {len(missing)} image(s) missing under {base / images}, e.g. "
                                f"{missing[:3]}; re-extract the dataset")
        out[split] = ImageSet(classes, names, labels, [base / images / n for n in names])
    return out


def _parse_lines(path: Path, fields: int, integer_first: bool = False) -> list[tuple[int, list[str]]]:
    """Non-blank lines split into `fields` fields; `integer_first`: the first field must be an integer id."""
    rows = []
    for no, line in enumerate(read_text(path, "file (it comes with the official dataset download)").splitlines(), 1):
        if line.strip():
            parts = line.strip().split(maxsplit=fields - 1)
            if len(parts) != fields or (integer_first and not parts[0].isdigit()):
                raise LowlabelError(f"{path}, line {no}: expected {fields} field(s)"
                                    f"{', the first an integer id' if integer_first else ''}, got {line.strip()!r}")
            rows.append((no, parts))
    return rows


def read_cub200(data_root: str | Path) -> dict[str, ImageSet]:
    """CUB-200-2011 train (5,994) / test (5,794): `<root>/CUB_200_2011/{train,test}/<class>/*.jpg` (official
    layout), or the official download (`images/`, `images.txt`, `train_test_split.txt`) split here in memory."""
    base = _find_dataset(Path(data_root), "CUB_200_2011")
    if (base / "train").is_dir():
        return read_split_folders(base)
    split = {int(p[0]): p[1] == "1" for _, p in _parse_lines(base / "train_test_split.txt", 2, integer_first=True)}
    listing = {}
    for no, (i, rel) in _parse_lines(base / "images.txt", 2, integer_first=True):
        if int(i) not in split:
            raise LowlabelError(f"{base / 'images.txt'}, line {no}: image id {i} not in train_test_split.txt")
        listing[rel] = split[int(i)]
    return _read_listed(base, "images", listing, str(base / "images.txt"))


def read_indoor67(data_root: str | Path) -> dict[str, ImageSet]:
    """MIT Indoor-67 train/test: `<root>/indoorCVPR_09/{train,test}/<class>/` (official layout), or the official
    download (`Images/<class>/`, `TrainImages.txt`, `TestImages.txt`, one `class/file.jpg` a line) split here."""
    base = _find_dataset(Path(data_root), "indoorCVPR_09")
    if (base / "train").is_dir():
        return read_split_folders(base)
    listing: dict[str, bool] = {}
    for name, flag in (("TrainImages.txt", True), ("TestImages.txt", False)):
        list_file = base / name if (base / name).is_file() else base.parent / name
        for no, (rel,) in _parse_lines(list_file, 1):
            if listing.setdefault(rel, flag) != flag:
                raise LowlabelError(f"{list_file}, line {no}: {rel} is listed in both TrainImages and TestImages")
    return _read_listed(base, "Images", listing, "TrainImages.txt/TestImages.txt")


def read_zip_folders(archives: Sequence[str | Path]) -> ImageSet:
    """Class folders inside zip archives (e.g. Omniglot `images_background_small1.zip`): the class of an image is
    its parent folder below the archive's single top folder (Omniglot: "Greek/character01"). Members present in
    several archives with the same content (Omniglot's Greek and Latin) are kept once; differing content is an
    error."""
    seen: dict[str, tuple[Path, str, int]] = {}
    for archive in map(Path, archives):
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir() and _is_image(Path(i.filename).name)]
        except (OSError, zipfile.BadZipFile) as err:
            raise LowlabelError(f"{archive}: not a readable zip archive ({err})") from None
        tops = {i.filename.split("/")[0] for i in infos}
        strip = len(tops) == 1 and all(i.filename.count("/") >= 2 for i in infos)
        for info in infos:
            key = info.filename.split("/", 1)[1] if strip else info.filename
            if "/" not in key:
                raise LowlabelError(f"{archive}:{info.filename}: image outside a class folder")
            if key in seen and seen[key][2] != info.CRC:
                raise LowlabelError(f"{archive}:{info.filename}: also in {seen[key][0]} with other content")
            seen.setdefault(key, (archive, info.filename, info.CRC))
    if not seen:
        raise LowlabelError(f"{[str(a) for a in archives]}: no images in these archives")
    names = sorted(seen, key=lambda n: (n.rsplit("/", 1)[0], n))
    classes = sorted({n.rsplit("/", 1)[0] for n in names})
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([lookup[n.rsplit("/", 1)[0]] for n in names], dtype=np.int64)
    return ImageSet(classes, names, labels, [seen[n][0] for n in names], [seen[n][1] for n in names])


def per_class_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The official class-balanced split (`dataset_split` after `np.random.seed(seed)`): permute all indices with
    the legacy NumPy RNG, then take the first `per_class` of each class in permuted order. Returns (chosen, rest)
    as index arrays; chosen is grouped by class. The official unlabelled set is the WHOLE training set
    (`num_unlabels` = -1), chosen images included. A class with fewer than `per_class` images is an error."""
    if per_class < 1:
        raise LowlabelError(f"labelled_per_class={per_class}: need at least 1 labelled image per class")
    labels = np.asarray(labels)
    order = np.random.RandomState(seed).permutation(len(labels))
    chosen = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = order[labels[order] == c]
        if len(members) < per_class:
            raise LowlabelError(f"class {c} has {len(members)} image(s), fewer than the {per_class} per class asked")
        chosen.append(members[:per_class])
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    return picked.astype(np.int64), rest.astype(np.int64)


def read_labelled_list(path: str | Path, images: ImageSet) -> np.ndarray:
    """Indices into `images` of a labelled-subset list: one image key ("class_dir/file.jpg", as `images.names`)
    per line; blank lines and lines starting with '#' are skipped. Unknown or repeated keys are errors."""
    path = Path(path)
    lookup = {n: i for i, n in enumerate(images.names)}
    out: dict[int, int] = {}
    for no, line in enumerate(read_text(path, "labelled-subset list").splitlines(), 1):
        key = line.strip().replace("\\", "/")
        if not key or key.startswith("#"):
            continue
        if key not in lookup:
            raise LowlabelError(f"{path}, line {no}: '{key}' is not an image of the training split; keys are "
                                f"paths below the split folder, e.g. '{images.names[0]}'")
        if lookup[key] in out:
            raise LowlabelError(f"{path}, line {no}: '{key}' repeats line {out[lookup[key]]}")
        out[lookup[key]] = no
    if not out:
        raise LowlabelError(f"{path}: lists no image; write one image key per line")
    return np.asarray(list(out), dtype=np.int64)


def write_labelled_list(path: str | Path, images: ImageSet, indices: Sequence[int] | np.ndarray) -> Path:
    """Write the keys of `indices` one per line (the run's labelled subset, readable by `read_labelled_list`)."""
    return write_text(path, "".join(f"{images.names[int(i)]}\n" for i in indices))


def resize_short(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision `Resize(size)` on a PIL image: short side -> size, long side int(size · long / short), bilinear
    (antialiased by PIL). image uint8 (H, W, 3)."""
    from PIL import Image

    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_h, new_w) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision `CenterCrop(size)`: zero-pad a smaller image, then crop at round((H - size) / 2)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        image = np.pad(image, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = image.shape[:2]
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return image[top : top + size, left : left + size]


def load_images(images: ImageSet, indices: Sequence[int] | np.ndarray | None = None,
                short_side: int | None = None, crop: int | None = None) -> list[np.ndarray]:
    """Decode images (uint8 RGB (H, W, 3)), optionally `resize_short` then `center_crop` (official test transform:
    Resize(256), CenterCrop(224); training images keep their resized shape for the random crop)."""
    out = []
    with contextlib.ExitStack() as stack:
        archives = {a: stack.enter_context(zipfile.ZipFile(a)) for a in set(images.files)} if images.members else {}
        for i in range(len(images)) if indices is None else map(int, indices):
            if images.members is None:
                image = read_image(images.files[i])
            else:
                image = read_zip_image(images.files[i], images.members[i], archives[images.files[i]])
            image = resize_short(image, short_side) if short_side else image
            out.append(center_crop(image, crop) if crop else image)
    return out


def image_tensor(images: ImageSet, side: int, indices: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Decoded images as one uint8 (N, 3, side, side) tensor: short side -> `side`, then the centre square.

    The official code decodes every image into RAM and crops at each step; keeping the resized centre square is the
    same for square images (CUB/Indoor: a random crop of a non-square image can reach its border, here it cannot).
    """
    import torch

    arrays = load_images(images, indices, short_side=side, crop=side)
    if not arrays:
        raise LowlabelError("no images to load")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def shapes_images(n: int, *, seed: int, domain: str, size: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` one-object scenes of the shapes world (`domain` 'source' or 'target', `size` px rendered), resized to
    `side` px: uint8 (n, 3, side, side) and the shape class (n,) int64 (9 classes)."""
    import torch
    import torch.nn.functional as F

    from lowlabel.data.synth.shapes import ShapesConfig, generate_scene

    cfg = ShapesConfig(size=size, domain=domain, single_object=True, n_captions=1)
    scenes = [generate_scene(np.random.default_rng([seed, i]), cfg) for i in range(n)]
    x = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).contiguous()
    if side != size:
        x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x, torch.tensor([s.objects[0].shape for s in scenes], dtype=torch.int64)


def held_out_split(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed per-class held-out set (Omniglot: the last `per_class` drawings of each character, in file order).
    Returns (train, test) index arrays; a class with no more than `per_class` images is an error."""
    labels = np.asarray(labels)
    test = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise LowlabelError(f"class {c} has {len(members)} image(s); holding out {per_class} leaves none to train")
        test.append(members[-per_class:])
    held = np.concatenate(test)
    return np.setdiff1d(np.arange(len(labels)), held), np.sort(held)


class TwoStreams:
    """ACR's batch source: per step `labelled_bs` labelled and `unlabelled_bs` unlabelled images (uint8) with the
    labels of the labelled ones. Each stream is the official `RandomSampler(replacement=True)`: an endless chain of
    fresh permutations (every image once per pass); an epoch is `steps_per_epoch` steps (official 100). The order
    depends only on (seed, stream, pass): resumable. Yields (x_l (Bl, 3, R, R), y_l (Bl,), x_u (Bu, 3, R, R)).

    Under DDP (`world_size` ranks) the batch sizes are per rank: each step draws one global batch of
    `world_size` x the size from the streams and rank r takes its r-th slice, so the ranks see different images."""

    def __init__(self, labelled: torch.Tensor, labels: torch.Tensor, unlabelled: torch.Tensor, *, labelled_bs: int,
                 unlabelled_bs: int, steps_per_epoch: int = 100, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if not len(labelled) or not len(unlabelled):
            raise LowlabelError(f"{len(labelled)} labelled and {len(unlabelled)} unlabelled images: need both")
        if labelled_bs < 1 or unlabelled_bs < 1 or steps_per_epoch < 1:
            raise LowlabelError("labelled_bs, unlabelled_bs and steps_per_epoch must be at least 1")
        self.labelled, self.labels, self.unlabelled = labelled, labels, unlabelled
        self.labelled_bs, self.unlabelled_bs, self.seed = labelled_bs, unlabelled_bs, seed
        self.steps_per_epoch, self.rank, self.world_size = steps_per_epoch, rank, world_size

    def _order(self, stream: int, n: int, batch: int, epoch: int) -> np.ndarray:
        need = self.steps_per_epoch * batch
        first, offset = divmod(epoch * need, n)
        perms = [np.random.default_rng([self.seed, stream, c]).permutation(n)
                 for c in range(first, first + (offset + need) // n + 1)]
        return np.concatenate(perms)[offset : offset + need]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        import torch

        bl, bu, w = self.labelled_bs, self.unlabelled_bs, self.world_size
        lab = torch.from_numpy(self._order(0, len(self.labelled), bl * w, epoch))
        unl = torch.from_numpy(self._order(1, len(self.unlabelled), bu * w, epoch))
        for b in range(start, self.steps_per_epoch):
            il = lab[(b * w + self.rank) * bl : (b * w + self.rank + 1) * bl]
            iu = unl[(b * w + self.rank) * bu : (b * w + self.rank + 1) * bu]
            yield self.labelled[il], self.labels[il], self.unlabelled[iu]
