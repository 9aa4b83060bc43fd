"""The built-in data for CKD: shapes-world scenes with captions, a small detector trained on *other* scenes' boxes
and shape classes, and the grounding set (`features.GroundingSet`) it gives.

The detector (`TinyDetector`) is a single-shot anchor detector: five 3x3 convolutions (two of stride 2, two
dilated) give a 16x16 map of a 64x64 image, and a 1x1 head predicts for each of 5 anchor boxes per cell the class
(background + 9 shapes, softmax) and the box offsets (Faster R-CNN encoding). It knows shapes, not colours. Its
boxes after class-agnostic NMS are the proposals, and its class probabilities on them are the teacher, as an Open
Images detector's softmax over background + classes in the paper (so the teacher normalisation is the official
"shift"). The region features the grounding model sees are the image's pixels RoI-aligned to 7x7 per proposal (147
values): they say nothing of what the detector learnt. Captions' phrases go to a class by the official route, a
lookup table (here: the shape word of the phrase). Ground-truth boxes are used only to train the detector on its own
scenes and to evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowlabel.data.synth.shapes import SHAPES, ShapesConfig, generate_scene
from lowlabel.data.synth.shapes_text import SHAPE_WORDS
from lowlabel.engine.runtime import seeded
from lowlabel.methods.grounding_ckd.data import tokenize
from lowlabel.methods.grounding_ckd.detections import BACKGROUND
from lowlabel.methods.grounding_ckd.features import GroundingSet
from lowlabel.methods.grounding_ckd.model import roi_align
from lowlabel.metrics.grounding import box_iou

ANCHORS = ((12, 12), (18, 18), (25, 25), (24, 13), (13, 24))  # (w, h) in pixels of a 64x64 image
STRIDE = 4
CLASS_NAMES = [BACKGROUND, *SHAPES]
_WORD_CLASS = {w: 1 + i for i, shape in enumerate(SHAPES) for w in SHAPE_WORDS[shape]}


@dataclass
class WorldConfig:
    """Sizes of the built-in grounding world: scene counts per part, proposals per image, detector training."""

    n_detector: int = 800  # scenes with boxes and classes that train the detector (never seen by the grounder)
    n_train: int = 1200  # scenes whose captions are the weak training pairs
    n_test: int = 300  # scenes for evaluation
    size: int = 64
    num_regions: int = 20  # proposals per image kept after NMS
    nms_iou: float = 0.7
    detector_steps: int = 600
    detector_batch: int = 32
    detector_lr: float = 3e-3
    seed: int = 0


def phrase_class(text: str) -> int:
    """The detector class of a shapes-world phrase by lookup (its shape word, synonyms included), -1 if none."""
    return next((_WORD_CLASS[w] for w in tokenize(text) if w in _WORD_CLASS), -1)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation), nn.ReLU())


class TinyDetector(nn.Module):
    """(B, 3, 64, 64) images in [0, 1] -> class logits (B, H*W*A, 1 + classes) and box offsets (B, H*W*A, 4)."""

    def __init__(self, *, num_classes: int = len(SHAPES), width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(3, width // 2, 2), _conv(width // 2, width, 2), _conv(width, width),
                                  _conv(width, width, dilation=2), _conv(width, width, dilation=4))
        self.head = nn.Conv2d(width, len(ANCHORS) * (5 + num_classes), 1)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(images - 0.5))  # (B, A * (5 + K), H, W)
        b, _, h, w = out.shape
        out = out.view(b, len(ANCHORS), 5 + self.num_classes, h, w).permute(0, 3, 4, 1, 2)
        out = out.reshape(b, h * w * len(ANCHORS), 5 + self.num_classes)
        return out[..., 4:], out[..., :4]


def anchor_boxes(size: int) -> torch.Tensor:
    """(H*W*A, 4) anchors x1y1x2y2 centred on the cells of the stride-4 map, in the head's order."""
    cells = (torch.arange(size // STRIDE, dtype=torch.float32) + 0.5) * STRIDE
    cy, cx = torch.meshgrid(cells, cells, indexing="ij")
    wh = torch.tensor(ANCHORS, dtype=torch.float32)
    centre = torch.stack([cx, cy], -1)[:, :, None, :].expand(-1, -1, len(ANCHORS), -1)
    half = wh[None, None] / 2
    return torch.cat([centre - half, centre + half], -1).reshape(-1, 4)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Faster R-CNN box offsets (dx, dy, log dw, log dh) of `boxes` relative to `anchors`, both (..., 4)."""
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    bw, bh = (boxes[..., 2] - boxes[..., 0]).clamp_min(1.0), (boxes[..., 3] - boxes[..., 1]).clamp_min(1.0)
    dx = ((boxes[..., 0] + boxes[..., 2]) - (anchors[..., 0] + anchors[..., 2])) / 2 / aw
    dy = ((boxes[..., 1] + boxes[..., 3]) - (anchors[..., 1] + anchors[..., 3])) / 2 / ah
    return torch.stack([dx, dy, torch.log(bw / aw), torch.log(bh / ah)], -1)


def decode(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode`: offsets (..., 4) on anchors (..., 4) -> boxes x1y1x2y2."""
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    cx = (anchors[..., 0] + anchors[..., 2]) / 2 + offsets[..., 0] * aw
    cy = (anchors[..., 1] + anchors[..., 3]) / 2 + offsets[..., 1] * ah
    w, h = aw * offsets[..., 2].clamp(max=3).exp(), ah * offsets[..., 3].clamp(max=3).exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _scenes(seed: int, part: int, n: int, size: int) -> list:
    cfg = ShapesConfig(size=size)
    return [generate_scene(np.random.default_rng([seed, part, i]), cfg) for i in range(n)]


def _images(scenes: list) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255.0


def train_detector(scenes: list, cfg: WorldConfig) -> TinyDetector:
    """Fit a `TinyDetector` to the boxes and shape classes of `scenes` (anchors with IoU >= 0.5 to an object, or the
    best anchor of each object, are positives; IoU < 0.4 background, 3 sampled per positive; cross-entropy + smooth
    L1 on the positives' offsets; Adam). Deterministic given cfg.seed; the global RNG is left alone."""
    gen = torch.Generator().manual_seed(cfg.seed)
    with seeded(cfg.seed):
        det = TinyDetector()
    anchors = anchor_boxes(cfg.size)
    images = _images(scenes)
    labels = torch.zeros(len(scenes), len(anchors), dtype=torch.long)  # 0 background, -1 ignore
    targets = torch.zeros(len(scenes), len(anchors), 4)
    for i, scene in enumerate(scenes):
        gt = torch.as_tensor(scene.boxes, dtype=torch.float32)
        iou = box_iou(anchors, gt, offset=0.0)  # (A, n)
        best, arg = iou.max(dim=1)
        labels[i] = torch.where(best >= 0.5, torch.as_tensor([o.shape + 1 for o in scene.objects])[arg],
                                torch.where(best < 0.4, 0, -1))
        own = iou.argmax(dim=0)
        labels[i, own] = torch.as_tensor([o.shape + 1 for o in scene.objects])
        targets[i] = encode(gt[arg], anchors)
        targets[i, own] = encode(gt, anchors[own])
    opt = torch.optim.Adam(det.parameters(), lr=cfg.detector_lr)
    for _ in range(cfg.detector_steps):
        idx = torch.randint(len(scenes), (cfg.detector_batch,), generator=gen)
        logits, offsets = det(images[idx])
        lab = labels[idx]
        pos = lab > 0
        neg = (lab == 0) & (torch.rand(lab.shape, generator=gen) < 3 * pos.sum() / (lab == 0).sum().clamp_min(1))
        use = pos | neg
        loss = F.cross_entropy(logits[use], lab[use]) + F.smooth_l1_loss(offsets[pos], targets[idx][pos], beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return det.eval()


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float, keep: int) -> torch.Tensor:
    """Greedy non-maximum suppression among the 10 * keep best boxes: indices (<= keep,) of boxes (n, 4) by
    descending score, each with IoU <= iou to every box kept before it."""
    order = torch.argsort(scores, descending=True, stable=True)[: max(keep * 10, 1)]
    alive = torch.ones(len(order), dtype=torch.bool)
    overlaps = box_iou(boxes[order], boxes[order], offset=0.0)
    chosen: list[int] = []
    for j in range(len(order)):
        if not alive[j]:
            continue
        chosen.append(j)
        if len(chosen) == keep:
            break
        alive &= overlaps[j] <= iou
    return order[torch.as_tensor(chosen, dtype=torch.long)]


@torch.no_grad()
def detect(det: TinyDetector, images: torch.Tensor, cfg: WorldConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals (B, R, 4) and class probabilities (B, R, 1 + classes) of the detector: boxes ranked by 1 - p(back-
    ground), class-agnostic NMS, the first R kept (fewer are padded by repeating the last, never happens here)."""
    anchors = anchor_boxes(cfg.size)
    logits, offsets = det(images)
    probs = logits.softmax(-1)
    boxes = decode(offsets, anchors).clamp(0, cfg.size)
    out_b = torch.zeros(len(images), cfg.num_regions, 4)
    out_p = torch.zeros(len(images), cfg.num_regions, probs.shape[-1])
    for i in range(len(images)):
        keep = nms(boxes[i], 1 - probs[i, :, 0], cfg.nms_iou, cfg.num_regions)
        keep = torch.cat([keep, keep[-1:].expand(cfg.num_regions - len(keep))])
        out_b[i], out_p[i] = boxes[i, keep], probs[i, keep]
    return out_b, out_p


def pixel_features(images: torch.Tensor, boxes: torch.Tensor, grid: int = 7) -> torch.Tensor:
    """Region features: the image (B, 3, H, W) RoI-aligned to grid x grid per box (B, R, 4) -> (B, R, 3 * grid^2)."""
    b, r = boxes.shape[:2]
    index = torch.arange(b, dtype=boxes.dtype).repeat_interleave(r)
    pooled = roi_align(images, torch.cat([index[:, None], boxes.reshape(-1, 4)], 1), (grid, grid))
    return pooled.reshape(b, r, -1)


def grounding_set(scenes: list, det: TinyDetector, cfg: WorldConfig) -> GroundingSet:
    """Scenes -> the features file's arrays: one sentence per caption, one phrase per linked noun phrase, with its
    looked-up class and the box of the object it names."""
    images = _images(scenes)
    boxes, probs = _detect_all(det, images, cfg)
    feats = pixel_features(images, boxes)
    sentence_image, sentences, phrase_sentence, phrase_text, classes, gt = [], [], [], [], [], []
    for i, scene in enumerate(scenes):
        for c, caption in enumerate(scene.captions):
            s = len(sentences)
            sentence_image.append(i)
            sentences.append(caption)
            for ph in sorted((p for p in scene.phrases if p.caption == c), key=lambda p: p.start):
                phrase_sentence.append(s)
                phrase_text.append(ph.text)
                classes.append(phrase_class(ph.text))
                gt.append(scene.boxes[ph.obj].astype(np.float32))
    return GroundingSet(
        [f"scene{i:05d}" for i in range(len(scenes))], feats.numpy(), boxes.numpy(),
        np.ones(boxes.shape[:2], bool), probs.numpy(), list(CLASS_NAMES), np.asarray(sentence_image, np.int64),
        sentences, np.asarray(phrase_sentence, np.int64), phrase_text, np.asarray(classes, np.int64),
        np.stack(gt)[:, None], np.ones((len(gt), 1), bool))


def _detect_all(det: TinyDetector, images: torch.Tensor, cfg: WorldConfig) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [detect(det, chunk, cfg) for chunk in images.split(256)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def build_world(cfg: WorldConfig) -> tuple[GroundingSet, GroundingSet]:
    """(train, test) grounding sets of the world with seed cfg.seed: the detector learns on n_detector scenes of its
    own, then detects on n_train training and n_test test scenes (three disjoint scene streams)."""
    with torch.random.fork_rng(devices=[]):
        det = train_detector(_scenes(cfg.seed, 0, cfg.n_detector, cfg.size), cfg)
        train = grounding_set(_scenes(cfg.seed, 1, cfg.n_train, cfg.size), det, cfg)
        test = grounding_set(_scenes(cfg.seed, 2, cfg.n_test, cfg.size), det, cfg)
    return train, test


def test_scenes(cfg: WorldConfig, n: int) -> list:
    """The first n test scenes of the world (for figures)."""
    return _scenes(cfg.seed, 2, n, cfg.size)
