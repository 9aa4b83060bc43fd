"""COCO-layout images and captions -> grounding sets (`features.GroundingSet`): a Darknet detector read through
OpenCV's DNN module gives the proposals and the teacher's class scores, an ImageNet MobileNetV2 with RoI-align the
region features, caption nouns matched to COCO category names the phrases, their classes and (from the instance
boxes) their ground truth.

Phrase rule (`caption_phrases`): the caption is lower-cased and split into words; scanning left to right, the longest
span (two words, then one) that is a category's name, its plural (+s / +es on the last word) or one of its synonyms
in `SYNONYMS` is a phrase of that category; the phrase's text is the span with up to two words before it that are
not function words (`FUNCTION_WORDS`, numbers included). Ground truth (`phrase_boxes`): every instance box of that
category in the image (crowd boxes included), and their union when there are several; a proposal is correct when
its IoU with any of them is > 0.5. A phrase whose category has no instance in the image is kept for training and not
evaluated. The phrase's class for the teacher is the same category (the official route: a phrase -> class table).

Detector (`DarknetDetector`): `cv2.dnn.readNetFromDarknet` with every `[yolo]` layer's threshold set to 0 (OpenCV
zeroes class scores below 0.2 by default), the image resized to the network size without letterbox (as OpenCV's own
samples); a row's class scores are objectness x sigmoid(class logit), Darknet's per-class confidence: probabilities
with no background class, so the official COCO teacher normalisation t / 2 applies. Proposals: the boxes ranked by
their best class score, class-agnostic NMS at IoU 0.45 (Darknet's default), the first R kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path, read_text
from lowlabel.methods.grounding_ckd import regions
from lowlabel.methods.grounding_ckd.features import GroundingSet, padded_boxes
from lowlabel.methods.grounding_ckd.model import RegionFeatureExtractor
from lowlabel.metrics.grounding import box_iou

SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("man", "men", "woman", "women", "people", "boy", "boys", "girl", "girls", "child", "children", "kid",
               "kids", "guy", "guys", "lady", "ladies", "player", "players", "skier", "skiers", "surfer", "surfers",
               "skateboarder", "skateboarders", "snowboarder", "snowboarders", "rider", "riders", "baby", "toddler",
               "adult", "adults", "gentleman", "batter", "catcher", "pitcher"),
    "airplane": ("plane", "planes", "jet", "jets", "airliner", "airliners", "aircraft"),
    "bicycle": ("bike", "bikes"),
    "motorcycle": ("motorbike", "motorbikes"),
    "boat": ("ship", "ships", "canoe", "canoes", "kayak", "kayaks", "sailboat", "sailboats"),
    "cow": ("cattle", "bull", "bulls", "calf"),
    "couch": ("sofa", "sofas"),
    "dining table": ("table", "tables"),
    "tv": ("television", "televisions", "tvs"),
    "cell phone": ("phone", "phones", "cellphone", "cellphones", "smartphone"),
    "donut": ("doughnut", "doughnuts"),
    "hot dog": ("hotdog", "hotdogs"),
    "sports ball": ("ball", "balls", "football", "soccer ball", "tennis ball", "baseball"),
    "refrigerator": ("fridge", "fridges"),
    "potted plant": ("plant", "plants", "houseplant"),
    "teddy bear": ("teddy",),
    "cup": ("mug", "mugs"),
    "handbag": ("purse", "purses"),
    "tennis racket": ("racket", "rackets", "racquet", "racquets"),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skis": ("ski",),
    "surfboard": ("surf board", "surfboards"),
    "laptop": ("laptops", "notebook"),
    "remote": ("remotes", "remote control"),
    "truck": ("lorry",),
    "car": ("taxi", "cab"),
    "sheep": ("lamb", "lambs"),
    "clock": ("clocks",),
}
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "of", "on", "in", "at", "with", "and", "or", "to", "is", "are", "was", "were", "be", "being",
    "been", "near", "by", "some", "his", "her", "their", "its", "this", "that", "these", "those", "while", "for",
    "from", "into", "onto", "under", "over", "next", "as", "up", "down", "has", "have", "there", "it", "he", "she",
    "they", "who", "which", "what", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "several", "many", "few", "other", "another", "each", "both", "all", "very", "top", "front", "back", "side",
    "behind", "beside", "between", "above", "below",
})


def word_table(categories: Sequence[str]) -> dict[tuple[str, ...], int]:
    """{word span: category index}: each category's name, its plural and its synonyms (lower case)."""
    table: dict[tuple[str, ...], int] = {}
    for c, name in enumerate(categories):
        name = name.lower()
        words = name.split()
        forms = {name, " ".join([*words[:-1], words[-1] + "s"]), " ".join([*words[:-1], words[-1] + "es"]),
                 *SYNONYMS.get(name, ())}
        for form in forms:
            table.setdefault(tuple(form.split()), c)
    return table


def caption_phrases(caption: str, table: dict[tuple[str, ...], int]) -> list[tuple[str, int]]:
    """The phrases of a caption by the rule of the module docstring: [(phrase text, category index)]."""
    words = re.findall(r"[a-z]+", caption.lower())
    out, i = [], 0
    while i < len(words):
        span = next((n for n in (2, 1) if tuple(words[i : i + n]) in table), 0)
        if not span:
            i += 1
            continue
        start = i
        while start > max(0, i - 2) and words[start - 1] not in FUNCTION_WORDS and \
                (words[start - 1],) not in table:
            start -= 1
        out.append((" ".join(words[start : i + span]), table[tuple(words[i : i + span])]))
        i += span
    return out


def phrase_boxes(instances: np.ndarray) -> np.ndarray:
    """Ground-truth boxes of a phrase from its category's instance boxes (n, 4) x1y1x2y2: all of them, plus their
    union when n > 1."""
    if len(instances) > 1:
        union = np.concatenate([instances[:, :2].min(0), instances[:, 2:].max(0)])[None]
        return np.concatenate([instances, union]).astype(np.float32)
    return instances.astype(np.float32)


def read_coco(root: str | Path, split: str) -> tuple[list[dict], dict[int, list[str]], dict[int, list], list[str]]:
    """COCO layout `root/annotations/{captions,instances}_<split>2017.json`: (images with file_name/id, captions per
    image id, [(category index, x1y1x2y2)] per image id, category names in id order)."""
    root = Path(root)
    paths = [root / "annotations" / f"{kind}_{split}2017.json" for kind in ("captions", "instances")]
    loaded = []
    for path in paths:
        if not path.is_file():
            raise LowlabelError(f"{path}: not found; expected the COCO layout annotations/captions_<split>2017.json "
                                "and instances_<split>2017.json")
        try:
            loaded.append(json.loads(read_text(path, "COCO annotation file")))
        except json.JSONDecodeError as err:
            raise LowlabelError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    captions, instances = loaded
    try:
        cats = sorted(instances["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(cats)}
        by_image: dict[int, list] = {}
        for a in instances["annotations"]:
            x, y, w, h = a["bbox"]
            by_image.setdefault(a["image_id"], []).append((index[a["category_id"]], [x, y, x + w, y + h]))
        caps: dict[int, list[str]] = {}
        for a in captions["annotations"]:
            caps.setdefault(a["image_id"], []).append(a["caption"].strip())
        images = sorted(captions["images"], key=lambda im: im["id"])
    except (KeyError, TypeError, ValueError) as err:
        raise LowlabelError(f"{paths[0].parent}: COCO annotations lack a field ({type(err).__name__}: {err})") from None
    return images, caps, by_image, [c["name"] for c in cats]


class DarknetDetector:
    """A Darknet YOLO model (cfg + weights) through OpenCV DNN: image (H, W, 3) BGR -> boxes (n, 4) in pixels and
    class scores (n, C) (objectness x class sigmoid), every anchor of every output layer (no threshold)."""

    def __init__(self, cfg: str | Path, weights: str | Path, *, size: int | None = None) -> None:
        self.cv2 = regions.opencv()
        cfg, weights = Path(cfg), Path(weights)
        for path in (cfg, weights):
            if not path.is_file():
                raise LowlabelError(f"{path}: detector file not found")
        text = cfg.read_text()
        if not hasattr(self.cv2.dnn, "readNetFromDarknet"):
            raise LowlabelError(f"OpenCV {self.cv2.__version__} cannot read Darknet models; install "
                                "'opencv-python-headless<5'")
        found = re.search(r"^width\s*=\s*(\d+)", text, re.M)
        self.size = size or (int(found.group(1)) if found else 416)
        text = text.replace("[yolo]", "[yolo]\nthresh=0")
        self.net = self.cv2.dnn.readNetFromDarknet(np.frombuffer(text.encode(), np.uint8),
                                                   np.fromfile(weights, np.uint8))
        self.outputs = self.net.getUnconnectedOutLayersNames()

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image_bgr.shape[:2]
        blob = self.cv2.dnn.blobFromImage(image_bgr, 1 / 255.0, (self.size, self.size), swapRB=True, crop=False)
        self.net.setInput(blob)
        rows = np.concatenate(self.net.forward(self.outputs))
        cx, cy, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).clip(0, [w, h, w, h])
        return boxes.astype(np.float32), np.clip(rows[:, 5:], 0, 1).astype(np.float32)


def proposals(boxes: np.ndarray, scores: np.ndarray, num: int, iou: float = 0.45) -> np.ndarray:
    """Indices of the proposals: boxes ranked by best class score, class-agnostic greedy NMS, the first `num`."""
    order = np.argsort(-scores.max(1), kind="stable")[: num * 20]
    overlaps = box_iou(torch.from_numpy(boxes[order]), torch.from_numpy(boxes[order])).numpy()
    alive = np.ones(len(order), bool)
    kept: list[int] = []
    for j in range(len(order)):
        if alive[j]:
            kept.append(j)
            if len(kept) == num:
                break
            alive &= overlaps[j] <= iou
    return order[kept]


def image_regions(path: Path, detector: DarknetDetector, extractor: RegionFeatureExtractor, num: int,
                  long_side: int) -> tuple[np.ndarray, ...]:
    """One image -> (features (R, D), boxes (R, 4), mask (R,), scores (R, C)): the detector's proposals and the
    backbone's RoI-aligned features (`regions.region_arrays`)."""
    image = regions.read_bgr(path)
    boxes, scores = detector(image)
    keep = proposals(boxes, scores, num)
    return regions.region_arrays(image, boxes[keep], scores[keep], extractor, num, long_side)


def find_darknet(detector_dir: Path) -> tuple[Path, Path]:
    """The Darknet (.cfg, .weights) of a detector folder (the first of each, by name)."""
    cfg_file = next(iter(sorted(detector_dir.glob("*.cfg"))), None)
    weights = next(iter(sorted(detector_dir.glob("*.weights"))), None)
    if cfg_file is None or weights is None:
        raise LowlabelError(f"{detector_dir}: expected a Darknet .cfg and .weights (e.g. Yolo-Fastest 1.1-XL)")
    return cfg_file, weights


def prepare_split(root: str | Path, split: str, detector_dir: str | Path, *, num_regions: int = 30,
                  long_side: int = 480, cache: str | Path | None = None) -> GroundingSet:
    """The grounding set of COCO split `split` ("train" or "val"): images with captions, detector proposals and
    scores, MobileNetV2 region features, caption phrases with classes and ground truth (module docstring).

    Detector outputs and features are cached per split in `cache` (default: <tmp>/lowlabel-grounding-ckd), keyed by
    the image list, the detector files and the settings, so repeated runs do not recompute them."""
    root, detector_dir = Path(root), Path(detector_dir)
    images, caps, objects, categories = read_coco(root, split)
    cfg_file, weights = find_darknet(detector_dir)
    names_file = detector_dir / "coco.names"
    if names_file.is_file() and len(names_file.read_text().split("\n")) < len(categories):
        raise LowlabelError(f"{names_file}: fewer class names than the {len(categories)} COCO categories")
    images = [im for im in images if caps.get(im["id"])]
    key = hashlib.sha256(json.dumps([split, [im["file_name"] for im in images], weights.stat().st_size,
                                     cfg_file.read_text(), num_regions, long_side]).encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else Path(tempfile.gettempdir()) / "lowlabel-grounding-ckd"
    cached = cache / f"regions-{split}-{key}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            feats, boxes, mask, scores = z["features"], z["boxes"], z["region_mask"], z["scores"]
    else:
        detector, extractor = DarknetDetector(cfg_file, weights), regions.backbone()
        parts = [image_regions(root / f"{split}2017" / im["file_name"], detector, extractor, num_regions, long_side)
                 for im in images]
        feats, boxes, mask, scores = (np.stack(p) for p in zip(*parts, strict=True))
        with atomic_path(cached) as tmp, tmp.open("wb") as fh:
            np.savez(fh, features=feats, boxes=boxes, region_mask=mask, scores=scores)
    table = word_table(categories)
    sentence_image, sentences, phrase_sentence, texts, classes, gts = [], [], [], [], [], []
    for i, im in enumerate(images):
        inst = objects.get(im["id"], [])
        for caption in caps[im["id"]]:
            s = len(sentences)
            sentence_image.append(i)
            sentences.append(caption)
            for text, c in caption_phrases(caption, table):
                phrase_sentence.append(s)
                texts.append(text)
                classes.append(c)
                gts.append(phrase_boxes(np.asarray([b for k, b in inst if k == c], np.float32).reshape(-1, 4)))
    gt_boxes, gt_mask = padded_boxes(gts)
    return GroundingSet([im["file_name"] for im in images], feats, boxes, mask, scores, list(categories),
                        np.asarray(sentence_image, np.int64), sentences, np.asarray(phrase_sentence, np.int64), texts,
                        np.asarray(classes, np.int64), gt_boxes, gt_mask)
