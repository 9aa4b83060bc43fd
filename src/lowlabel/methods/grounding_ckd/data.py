"""Data for CKD: Flickr30K Entities (Sentences/*.txt markup, Annotations/*.xml boxes), ReferItGame-style (image,
phrase, box) lists, the official phrase HDF5, and phrases -> padded word-vector tensors for the phrase encoder.

Every box is (x1, y1, x2, y2) in 0-based pixels. Flickr30K Entities writes 1-based corners; like its own
`get_annotations`, 1 is subtracted from each. A phrase may have several boxes (one per `<object>` naming its id);
`merge_boxes` reduces them to one for the single-box evaluation (the rule CKD used is not in its code).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np
import torch

from lowlabel.errors import LowlabelError
from lowlabel.extras import require
from lowlabel.files import read_text

MAX_PHRASES = 16  # per sentence (official, hard-coded)
MAX_TOKENS = 10  # per phrase (official, hard-coded)
_HEADER = re.compile(r"^\[/EN#(\d+)((?:/[^/\]\s]*)*)$")


@dataclass(frozen=True)
class EntityPhrase:
    """A phrase of a Flickr30K Entities sentence: its words, position, entity id and coarse types."""

    text: str
    first_word: int
    phrase_id: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase and its ground-truth boxes (M, 4) float32 (M = 0: no box, e.g. scene or not visible)."""

    text: str
    boxes: np.ndarray
    phrase_id: str = ""


@dataclass
class GroundingSample:
    """One (image, sentence) pair with its phrases; `sentence` is "" for ReferItGame-style expression lists."""

    image: str
    sentence: str
    phrases: list[GroundedPhrase] = field(default_factory=list)


def read_npz(path: Path, arrays: Mapping[str, type], fmt: str) -> dict[str, Any]:
    """The named arrays of an NPZ file, converted to the given type (`str`: a flat list of Python strings, else a
    numpy dtype). A corrupt file, a missing array or an array of the wrong kind is a LowlabelError naming the file
    (and the array); `fmt` says where the format is described."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [a for a in arrays if a not in z.files]
            if missing:
                raise LowlabelError(f"{path}: missing arrays {missing}; see the format in {fmt}")
            raw = {a: z[a] for a in arrays}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, LowlabelError):
            raise
        raise LowlabelError(f"{path}: not a readable NPZ file ({err})") from None
    out: dict[str, Any] = {}
    for name, kind in arrays.items():
        if kind is str:
            out[name] = [str(v) for v in raw[name].reshape(-1)]
            continue
        allowed = "biuf" if np.issubdtype(kind, np.floating) else "biu"  # no silent float -> index or flag
        if raw[name].dtype.kind not in allowed:
            raise LowlabelError(f"{path}: array '{name}' holds {raw[name].dtype}, not {np.dtype(kind).name} values; "
                                f"see the format in {fmt}")
        out[name] = raw[name].astype(kind)
    return out


def parse_entity_sentence(line: str, where: str) -> tuple[str, list[EntityPhrase]]:
    """One marked-up sentence -> (plain sentence, phrases in order of opening). Brackets may nest ("[/EN#1/people
    [/EN#2/clothing a hat] man]") and close together ("hat]]"); `where` ("file line N") prefixes errors."""
    words: list[str] = []
    open_: list[tuple[int, str, tuple[str, ...], int]] = []  # (first word, id, types, slot in `found`)
    found: list[EntityPhrase | None] = []
    for token in line.split():
        if token.startswith("["):
            match = _HEADER.match(token)
            if match is None:
                raise LowlabelError(f"{where}: '{token}' is not a phrase header '[/EN#<id>/<type>...' followed by "
                                    "the phrase's words and ']'")
            types = tuple(t for t in match.group(2).split("/") if t)
            open_.append((len(words), match.group(1), types, len(found)))
            found.append(None)
            continue
        word = token.rstrip("]")
        closes = len(token) - len(word)
        if closes > len(open_):
            raise LowlabelError(f"{where}: '{token}' closes {closes} phrase(s) but only {len(open_)} is/are open")
        if word:
            words.append(word)
        for _ in range(closes):
            first, pid, types, slot = open_.pop()
            if first == len(words):
                raise LowlabelError(f"{where}: phrase [/EN#{pid} has no words")
            found[slot] = EntityPhrase(" ".join(words[first:]), first, pid, types)
    if open_:
        raise LowlabelError(f"{where}: phrase [/EN#{open_[-1][1]} is opened but never closed with ']'")
    return " ".join(words), [p for p in found if p is not None]


def read_entity_sentences(path: str | Path) -> list[tuple[str, list[EntityPhrase]]]:
    """Flickr30K Entities `Sentences/<id>.txt`: one marked-up sentence per non-empty line -> (sentence, phrases)."""
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: sentence file not found (expected Flickr30K Entities Sentences/<id>.txt)")
    text = read_text(path, "sentence file")
    return [parse_entity_sentence(line, f"{path} line {n}")
            for n, line in enumerate(text.splitlines(), 1) if line.strip()]


@dataclass
class _Node:
    tag: str
    line: int
    text: str = ""
    children: list[_Node] = field(default_factory=list)

    def find(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]


def _parse_xml(path: Path) -> _Node:
    """A small element tree whose nodes remember their line (so errors can name it)."""
    parser = expat.ParserCreate()
    stack: list[_Node] = [_Node("", 0)]

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as err:
        raise LowlabelError(f"{path} line {err.lineno}: not well-formed XML ({expat.ErrorString(err.code)})") from None
    return stack[0].children[0]


def _number(node: _Node, tag: str, path: Path) -> float:
    found = node.find(tag)
    if not found:
        raise LowlabelError(f"{path} line {node.line}: <{node.tag}> has no <{tag}>")
    try:
        return float(found[0].text.strip())
    except ValueError:
        raise LowlabelError(f"{path} line {found[0].line}: <{tag}> holds '{found[0].text.strip()}', not a number") \
            from None


def read_entity_boxes(path: str | Path) -> dict[str, np.ndarray]:
    """Flickr30K Entities `Annotations/<id>.xml` -> {entity id: boxes (M, 4) float32, 0-based x1y1x2y2}.

    An `<object>` lists one or more `<name>` ids and either a `<bndbox>` or `<nobndbox>`/`<scene>` flags; an id whose
    objects have no box maps to an empty (0, 4) array, an id with no object is absent. Corners are 1-based in the file
    (1 is subtracted, as the dataset's own reader).
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: annotation file not found (expected Flickr30K Entities Annotations/<id>.xml)")
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise LowlabelError(f"{path} line {root.line}: root element is <{root.tag}>, expected <annotation>")
    boxes: dict[str, list[list[float]]] = {}
    for obj in root.find("object"):
        names = [n.text.strip() for n in obj.find("name")]
        if not names or not all(names):
            raise LowlabelError(f"{path} line {obj.line}: <object> without an entity id in <name>")
        for name in names:
            boxes.setdefault(name, [])
        for box in obj.find("bndbox")[:1]:
            x1, y1, x2, y2 = (_number(box, t, path) - 1 for t in ("xmin", "ymin", "xmax", "ymax"))
            if x2 < x1 or y2 < y1:
                raise LowlabelError(f"{path} line {box.line}: box ({x1 + 1}, {y1 + 1}, {x2 + 1}, {y2 + 1}) has "
                                    "xmax < xmin or ymax < ymin")
            for name in names:
                boxes.setdefault(name, []).append([x1, y1, x2, y2])
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()}


def read_flickr30k_entities(root: str | Path, split: str | None = None, *,
                            strict: bool = False) -> list[GroundingSample]:
    """Flickr30K Entities under `root` (Sentences/, Annotations/, and <split>.txt listing image ids) -> one sample per
    sentence, image "<id>.jpg". Every phrase is kept; its boxes are all those of its entity id (none for scene, not
    visible and id 0 "notvisual"). split None = every Sentences/*.txt. `strict`: a phrase whose entity id (other than
    0) has no `<object>` at all in the annotation file, neither a box nor a no-box flag, is an error."""
    root = Path(root)
    if split is None:
        ids = sorted(p.stem for p in (root / "Sentences").glob("*.txt"))
        if not ids:
            raise LowlabelError(f"{root}: no Sentences/*.txt; expected the Flickr30K Entities layout")
    else:
        listing = root / f"{split}.txt"
        if not listing.is_file():
            raise LowlabelError(f"{listing}: split file not found; it lists one image id per line")
        ids = [line.strip() for line in read_text(listing, "split file").splitlines() if line.strip()]
    samples = []
    for image_id in ids:
        annotation, sentences = root / "Annotations" / f"{image_id}.xml", root / "Sentences" / f"{image_id}.txt"
        boxes = read_entity_boxes(annotation)
        for n, (sentence, phrases) in enumerate(read_entity_sentences(sentences), 1):
            unknown = [p for p in phrases if strict and p.phrase_id != "0" and p.phrase_id not in boxes]
            if unknown:
                raise LowlabelError(f"{sentences}, sentence {n}: phrase '{unknown[0].text}' [/EN#{unknown[0].phrase_id}"
                                    f" has no <object> in {annotation} (neither a box nor nobndbox/scene); annotate "
                                    "it or mark it notvisual (id 0)")
            grounded = [GroundedPhrase(p.text, boxes.get(p.phrase_id, np.zeros((0, 4), np.float32)), p.phrase_id)
                        for p in phrases]
            samples.append(GroundingSample(f"{image_id}.jpg", sentence, grounded))
    return samples


def read_referit_list(path: str | Path, *, box_format: str = "xyxy") -> list[GroundingSample]:
    """ReferItGame-style expression list -> one sample per image holding all its expressions (as the official
    "merge" files), in order of first appearance.

    A text file has one expression per line: `image<TAB>phrase<TAB>box`, the box as four numbers (one tab-separated
    column each, or one column separated by commas or spaces); blank lines and lines starting with '#' are skipped.
    box_format "xyxy" (x1, y1, x2, y2) or "xywh" (x, y, width, height), 0-based pixels.
    """
    path = Path(path)
    if box_format not in ("xyxy", "xywh"):
        raise LowlabelError(f"box_format='{box_format}': use 'xyxy' or 'xywh'")
    if not path.is_file():
        raise LowlabelError(f"{path}: expression list not found")
    by_image: dict[str, GroundingSample] = {}
    for n, line in enumerate(read_text(path, "expression list").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.rstrip("\r\n").split("\t")
        numbers = cols[2:] if len(cols) == 6 else re.split(r"[,\s]+", cols[2].strip()) if len(cols) == 3 else []
        try:
            box = [float(v) for v in numbers]
        except ValueError:
            box = []
        if len(box) != 4 or not cols[0].strip() or not cols[1].strip():
            raise LowlabelError(f"{path} line {n}: expected 'image<TAB>phrase<TAB>x1,y1,x2,y2' (or the box in four "
                                f"tab-separated columns), got '{line[:80]}'")
        if box_format == "xywh":
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        if box[2] < box[0] or box[3] < box[1] or not np.isfinite(box).all():
            raise LowlabelError(f"{path} line {n}: box {box} is not (x1, y1, x2, y2) with x2 >= x1, y2 >= y1"
                                f"{' (is it x, y, w, h? pass box_format=xywh)' if box_format == 'xyxy' else ''}")
        image = cols[0].strip()
        sample = by_image.setdefault(image, GroundingSample(image, ""))
        sample.phrases.append(GroundedPhrase(cols[1].strip(), np.asarray([box], dtype=np.float32)))
    return list(by_image.values())


def merge_boxes(boxes: np.ndarray, how: str = "union") -> np.ndarray | None:
    """One box (4,) for a phrase with boxes (M, 4): "union" (their enclosing box, the common multi-box protocol) or
    "first"; None when M = 0 (the phrase is not evaluated)."""
    if how not in ("union", "first"):
        raise LowlabelError(f"how='{how}': use 'union' or 'first'")
    if len(boxes) == 0:
        return None
    if how == "first":
        return boxes[0].copy()
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)]).astype(boxes.dtype)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters/digits), the unit of one LSTM step."""
    return re.findall(r"\w+", text.lower())


def phrase_token_ids(sentences: Sequence[Sequence[str]], embedder: object, *, max_phrases: int = MAX_PHRASES,
                     max_tokens: int = MAX_TOKENS,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrases of B sentences -> word ids (B, P, T) into a vector table (V + 1, D) whose last row (V) is the zero
    padding vector; P = max_phrases, T = max_tokens. `table[ids]` are the phrase encoder's inputs (`phrase_tensors`).

    `embedder` has `embed(words) -> (V, D)` (`lowlabel.nn.text.label_embedder`: "minilm" = all-MiniLM-L6-v2 input
    word-piece vectors averaged per word, the default vocabulary; "glove:PATH" the official GloVe; "random:DIM"). A word
    whose vector is zero (not in the vocabulary) is a zero, masked step, as the official loader. Words past T are cut.
    A sentence with more than P phrases keeps P drawn at random with `generator` (official training for ReferItGame),
    or its first P when generator is None.
    """
    kept: list[list[list[str]]] = []
    for phrases in sentences:
        phrases = list(phrases)
        if len(phrases) > max_phrases:
            if generator is None:
                phrases = phrases[:max_phrases]
            else:
                pick = torch.randperm(len(phrases), generator=generator)[:max_phrases].sort().values
                phrases = [phrases[i] for i in pick.tolist()]
        kept.append([tokenize(p)[:max_tokens] for p in phrases])
    vocab = sorted({w for sentence in kept for words in sentence for w in words})
    dim = int(getattr(embedder, "dim", 0)) or None
    table = embedder.embed(vocab).float() if vocab else torch.zeros(0, dim or 1)  # type: ignore[attr-defined]
    table = torch.cat([table, table.new_zeros(1, table.shape[1])])  # row V: padding
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.full((len(kept), max_phrases, max_tokens), len(vocab), dtype=torch.long)
    for b, sentence in enumerate(kept):
        for p, words in enumerate(sentence):
            ids[b, p, : len(words)] = torch.tensor([index[w] for w in words], dtype=torch.long)
    return ids, table


def phrase_tensors(sentences: Sequence[Sequence[str]], embedder: object, *, max_phrases: int = MAX_PHRASES,
                   max_tokens: int = MAX_TOKENS,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrases of B sentences -> word vectors (B, P, T, D) and token mask (B, P, T) (False = padding or unknown
    word); arguments as `phrase_token_ids`."""
    ids, table = phrase_token_ids(sentences, embedder, max_phrases=max_phrases, max_tokens=max_tokens,
                                  generator=generator)
    return table[ids], (table.abs().sum(dim=1) > 0)[ids]


def read_phrase_hdf5(path: str | Path, image: str) -> tuple[list[list[str]], np.ndarray]:
    """The official phrase HDF5 for one image -> (phrases of each sentence as strings, GT boxes (S, P, 4)).

    Dataset `<image>` holds tokens (S, P, 10) ("" = padding), `<image>_gt` the boxes (S, P, 4) (a slot whose last
    coordinate is not > 0 has no box). Trailing empty phrase slots are dropped from the strings.
    """
    h5py = require("h5py", "medical", "reading the official CKD phrase HDF5")
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: phrase HDF5 not found")
    with h5py.File(path, "r") as fh:
        if image not in fh or f"{image}_gt" not in fh:
            raise LowlabelError(f"{path}: no datasets '{image}' and '{image}_gt'; is this a CKD phrase file?")
        tokens, boxes = fh[image][()], fh[f"{image}_gt"][()].astype(np.float32)
    if tokens.ndim != 3 or boxes.shape != (*tokens.shape[:2], 4):
        raise LowlabelError(f"{path}: '{image}' {tokens.shape} and '{image}_gt' {boxes.shape} must be (S, P, T) and "
                            "(S, P, 4)")
    sentences = []
    for s in range(tokens.shape[0]):
        words = [[t.decode() if isinstance(t, bytes) else str(t) for t in phrase] for phrase in tokens[s]]
        phrases = [" ".join(w for w in phrase if w) for phrase in words]
        while phrases and not phrases[-1]:
            phrases.pop()
        sentences.append(phrases)
    return sentences, boxes
