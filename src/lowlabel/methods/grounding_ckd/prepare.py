"""A user's own data -> one features file (`features.GroundingSet`) per split, what `lowlabel grounding train` reads.

Annotations: Flickr30K Entities (`data.read_flickr30k_entities`, one sample per sentence, the split files
`<split>.txt`) or ReferItGame-style lists (`data.read_referit_list`, one sample per image holding all its expressions,
as the official "merge" files; the split is the list's file stem). A phrase's ground truth is the union of its boxes
(`data.merge_boxes`); a phrase without a box (scene, not visible) is kept for training and not evaluated.

Proposals and teacher: a detections file (`detections.read_detections`, any detector; an image's first R detections
in file order) or a Darknet detector folder (`coco.image_regions`, as `prepare-coco`). Region features: the same
backbone and RoI-align path as `prepare-coco` (`regions.region_arrays`). Phrase -> class: the official lookup table
(`detections.read_phrase_class_table`) or text-embedding similarity (`detections.classes_by_similarity`).

Everything that can be checked without the backbone (annotations of every split, image files, detections of every
image and no detections for images that no annotation lists) is checked before any feature is computed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lowlabel.errors import LowlabelError
from lowlabel.files import read_text
from lowlabel.methods.grounding_ckd import coco, regions
from lowlabel.methods.grounding_ckd.data import (
    GroundingSample,
    merge_boxes,
    read_flickr30k_entities,
    read_referit_list,
)
from lowlabel.methods.grounding_ckd.detections import (
    classes_by_similarity,
    classes_by_table,
    read_detections,
    read_phrase_class_table,
)
from lowlabel.methods.grounding_ckd.features import GroundingSet, padded_boxes

RegionsOf = Callable[[str], tuple[np.ndarray, ...]]


def read_annotations(*, flickr: Path | None, referit: Sequence[Path], splits: Sequence[str],
                     box_format: str = "xyxy") -> tuple[dict[str, list[GroundingSample]], set[str]]:
    """({split: samples}, every image name the annotation source knows, in any split)."""
    if (flickr is None) == (not referit):
        raise LowlabelError("give the annotations as --flickr ROOT or as --referit LIST (one per split), not both")
    if flickr is not None:
        by_split = {s: read_flickr30k_entities(flickr, s, strict=True) for s in splits}
        return by_split, {f"{p.stem}.jpg" for p in (Path(flickr) / "Sentences").glob("*.txt")}
    by_split = {}
    for path in referit:
        if Path(path).stem in by_split:
            raise LowlabelError(f"{path}: a second list for split '{Path(path).stem}'; the split is the file's stem "
                                "(train.txt, val.txt, test.txt)")
        by_split[Path(path).stem] = read_referit_list(path, box_format=box_format)
    return by_split, {s.image for samples in by_split.values() for s in samples}


def detection_file_regions(path: Path, images_dir: Path, needed: set[str], known: set[str], *, num: int,
                           long_side: int) -> tuple[RegionsOf, list[str]]:
    """(image name -> features-file rows, class names) from a detections file: each image's first `num` detections
    are its proposals and their class scores the teacher. Every needed image must have at least one detection and
    every image of the file must be known to the annotations (a naming mismatch otherwise goes unnoticed)."""
    dets = read_detections(path)
    unknown = sorted(set(dets.boxes) - known)
    if unknown:
        raise LowlabelError(f"{path}: detections for {len(unknown)} image(s) that no annotation lists, e.g. "
                            f"'{unknown[0]}'; name images as the annotations do (e.g. '{min(known, default='')}')")
    missing = sorted(n for n in needed if len(dets.boxes.get(n, ())) == 0)
    if missing:
        raise LowlabelError(f"{path}: no detections for {len(missing)} annotated image(s), e.g. '{missing[0]}'; run "
                            "the detector on them or drop them from the annotations")
    extractor = functools.cache(regions.backbone)  # built when the first image needs it

    def regions_of(name: str) -> tuple[np.ndarray, ...]:
        boxes, scores = dets.boxes[name][:num], dets.scores[name][:num]
        return regions.region_arrays(regions.read_bgr(images_dir / name), boxes, scores, extractor(), num,
                                     long_side)

    return regions_of, list(dets.class_names)


def darknet_regions(detector_dir: Path, images_dir: Path, *, num: int, long_side: int) -> tuple[RegionsOf, list[str]]:
    """(image name -> features-file rows, class names) from a Darknet detector folder (.cfg, .weights and a .names
    file, one class per line), its proposals and scores as in `prepare-coco`."""
    cfg_file, weights = coco.find_darknet(detector_dir)
    names_file = next(iter(sorted(detector_dir.glob("*.names"))), None)
    if names_file is None:
        raise LowlabelError(f"{detector_dir}: no .names file (the detector's class names, one per line)")
    names = [line.strip() for line in read_text(names_file, "class names file").splitlines() if line.strip()]
    detector = functools.cache(lambda: coco.DarknetDetector(cfg_file, weights))  # built when first needed
    extractor = functools.cache(regions.backbone)

    def regions_of(name: str) -> tuple[np.ndarray, ...]:
        rows = coco.image_regions(images_dir / name, detector(), extractor(), num, long_side)
        if rows[3].shape[1] != len(names):
            raise LowlabelError(f"{names_file}: {len(names)} class names, but the detector gives {rows[3].shape[1]} "
                                "class scores")
        return rows

    return regions_of, names


def phrase_classes(match: str, table: Path | None, class_names: Sequence[str]) -> Callable[[list[str]], np.ndarray]:
    """Phrase texts -> (Q,) class indices (-1: no class) by "table" (the official JSON at `table`) or "similarity"
    (MiniLM sentence embeddings); each distinct text is matched once."""
    if match == "table":
        if table is None:
            raise LowlabelError("--match table needs --table FILE (the official {\"phrase\": \"class name\"} JSON)")
        lookup = read_phrase_class_table(table, class_names)
    elif match != "similarity":
        raise LowlabelError(f"--match {match}: use 'table' (with --table FILE) or 'similarity'")

    def classify(texts: list[str]) -> np.ndarray:
        distinct = sorted(set(texts))
        found = classes_by_table(distinct, lookup) if match == "table" else classes_by_similarity(distinct,
                                                                                                    class_names)
        index = dict(zip(distinct, found.tolist(), strict=True))
        return np.asarray([index[t] for t in texts], np.int64).reshape(-1)

    return classify


def grounding_set(samples: Sequence[GroundingSample], regions_of: RegionsOf, class_names: Sequence[str],
                  classify: Callable[[list[str]], np.ndarray]) -> GroundingSet:
    """The features file of one split: images in order of first appearance, one sentence per sample (a ReferIt
    sample's sentence is its expressions joined by '; '), each phrase with its class and the union of its boxes."""
    images = list(dict.fromkeys(s.image for s in samples))
    index = {name: i for i, name in enumerate(images)}
    feats, boxes, mask, scores = (np.stack(p) for p in zip(*(regions_of(name) for name in images), strict=True))
    sentence_image, sentences, phrase_sentence, texts, gts = [], [], [], [], []
    for s, sample in enumerate(samples):
        sentence_image.append(index[sample.image])
        sentences.append(sample.sentence or "; ".join(p.text for p in sample.phrases))
        for phrase in sample.phrases:
            merged = merge_boxes(phrase.boxes)
            phrase_sentence.append(s)
            texts.append(phrase.text)
            gts.append(np.zeros((0, 4), np.float32) if merged is None else merged[None])
    gt_boxes, gt_mask = padded_boxes(gts)
    return GroundingSet(images, feats, boxes, mask, scores, list(class_names), np.asarray(sentence_image, np.int64),
                        sentences, np.asarray(phrase_sentence, np.int64), texts, classify(texts), gt_boxes, gt_mask)


def prepare(images_dir: Path, *, flickr: Path | None = None, referit: Sequence[Path] = (),
            splits: Sequence[str] = ("train", "val"), detections: Path | None = None, detector: Path | None = None,
            match: str = "similarity", table: Path | None = None, num_regions: int = 30, long_side: int = 480,
            box_format: str = "xyxy") -> Iterator[tuple[str, GroundingSet]]:
    """(split, features file) for each split, one at a time, from the annotations, proposals and matching of the
    module docstring; every check is made before the first split is built."""
    if num_regions < 1:
        raise LowlabelError(f"--regions {num_regions}: need at least 1")
    if (detections is None) == (detector is None):
        raise LowlabelError("give the proposals as --detections FILE or as --detector DIR, not both")
    by_split, known = read_annotations(flickr=flickr, referit=referit, splits=splits, box_format=box_format)
    for split, samples in by_split.items():
        if not samples:
            raise LowlabelError(f"split '{split}': its annotations hold no sentence or expression")
    needed = {s.image for samples in by_split.values() for s in samples}
    absent = sorted(n for n in needed if not (Path(images_dir) / n).is_file())
    if absent:
        raise LowlabelError(f"{Path(images_dir) / absent[0]}: image not found ({len(absent)} annotated image(s) are "
                            "not in the images folder)")
    if detections is not None:
        regions_of, class_names = detection_file_regions(detections, Path(images_dir), needed, known,
                                                         num=num_regions, long_side=long_side)
    else:
        regions_of, class_names = darknet_regions(Path(detector), Path(images_dir), num=num_regions,
                                                  long_side=long_side)
    classify = phrase_classes(match, table, class_names)
    for split, samples in by_split.items():
        yield split, grounding_set(samples, regions_of, class_names, classify)
