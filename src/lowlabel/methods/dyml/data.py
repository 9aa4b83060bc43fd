"""Data for DyML: the benchmark's label files and folder layout, a generic hierarchy CSV, and Omniglot as a
three-level hierarchy (character / alphabet / writing-system type).

DyML layout (spec "On-disk format"): <root>/train/label.csv ("fname, coarse, middle, fine") with images in
train/imgs/; <root>/bmk_{fine,middle,coarse}/{query,gallery}.csv ("fname, label") with images in
bmk_<level>/<part>/; Product's test set <root>/mini-bmk_all_in_one/label.csv (4 columns) with imgs/. Labels come
out as (fine, middle, coarse) columns, the order of every lowlabel tensor.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowlabel.data.io import read_image
from lowlabel.errors import LowlabelError

LEVELS = ("fine", "middle", "coarse")
PARTS = ("query", "gallery")
# The header glued to the first record: "fname, coarse_id, middle_id, fine_id" or "fname, labels".
_HEADER = re.compile(r"^\ufeff?\s*fname((\s*,\s*(coarse_id|middle_id|fine_id|labels))+)", re.IGNORECASE)
_CSV_HEADER_NAMES = ("path", "fname", "file", "filename", "image")


def read_label_file(path: str | Path) -> list[tuple]:
    """Records of a DyML label file in file order: (file name, label, ...) with integer labels.

    A header in either form (`fname, coarse_id, middle_id, fine_id` or `fname, labels`) is removed, also when the
    first record is glued to it with no newline (as the released files are). Fields are split on "," and stripped;
    blank lines and lines with fewer fields than the header (or than the first record) are skipped. Lines with more
    fields, or with a label that is not an integer, raise a LowlabelError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: label file not found; check the dataset folder")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    width = None
    if lines:
        match = _HEADER.match(lines[0])
        if match:
            width = 1 + match.group(1).count(",")
            lines[0] = lines[0][match.end():]
    records: list[tuple] = []
    for number, line in enumerate(lines, start=1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or len(fields) < 2:
            continue
        width = width or len(fields)
        if len(fields) < width:
            continue
        if len(fields) > width:
            raise LowlabelError(f"{path}, line {number}: {len(fields)} fields where the file has {width}; "
                                "each line must be 'file name, label[, label, label]'")
        try:
            records.append((fields[0], *(int(f) for f in fields[1:])))
        except ValueError:
            raise LowlabelError(f"{path}, line {number}: label(s) {fields[1:]} are not integers; DyML label "
                                "files hold integer class ids") from None
    if not records:
        raise LowlabelError(f"{path}: no record found; expected lines 'file name, label[, label, label]'")
    return records


@dataclass
class LabelledFiles:
    """Image files with labels: paths (N,), labels (N, L) int64 (fine, middle, coarse order when L = 3).

    `swap_channels`: reverse the channel order of every image read, as the official loader does (cv2 returns BGR
    and its comment says the stored channels are swapped, so it sees the true colours); [H] and CLCD read the
    files as stored RGB (False). `names[l]` gives the original class name of each level-l id, where known.
    """

    paths: list[Path]
    labels: np.ndarray
    swap_channels: bool = True
    names: tuple[list[str], ...] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3), channel order per `swap_channels`."""
        rgb = read_image(self.paths[i])
        return np.ascontiguousarray(rgb[..., ::-1]) if self.swap_channels else rgb


def _files(folder: Path, names: Sequence[str], source: Path, check: bool) -> list[Path]:
    paths = [folder / n for n in names]
    if check:
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise LowlabelError(f"{source}: {len(missing)} listed image(s) are not in {folder}, e.g. {missing[:3]}; "
                                "check that the images were extracted next to the label file")
    return paths


def check_tree(labels: np.ndarray, source: str) -> None:
    """Raise a LowlabelError naming `source` when a fine class (column 0) has two labels at a coarser level."""
    for level in range(1, labels.shape[1]):
        pairs = np.unique(labels[:, [0, level]], axis=0)
        fine, counts = np.unique(pairs[:, 0], return_counts=True)
        if (counts > 1).any():
            bad = int(fine[counts > 1][0])
            parents = pairs[pairs[:, 0] == bad, 1].tolist()
            raise LowlabelError(f"{source}: fine class {bad} has {LEVELS[level]} labels {parents}; each fine class "
                                f"needs one {LEVELS[level]} label (a tree-shaped hierarchy)")


def read_dyml_train(root: str | Path, *, swap_channels: bool = True, check_files: bool = True) -> LabelledFiles:
    """<root>/train/label.csv and train/imgs/: labels (N, 3) as (fine, middle, coarse), the file's own ids."""
    source = Path(root) / "train" / "label.csv"
    records = read_label_file(source)
    if len(records[0]) != 4:
        raise LowlabelError(f"{source}: rows have {len(records[0]) - 1} label(s); the training file needs "
                            "'fname, coarse, middle, fine'")
    labels = np.array([r[:0:-1] for r in records], dtype=np.int64)  # file order coarse, middle, fine -> reversed
    check_tree(labels, str(source))
    paths = _files(source.parent / "imgs", [r[0] for r in records], source, check_files)
    return LabelledFiles(paths, labels, swap_channels)


def read_dyml_benchmark(root: str | Path, level: str, part: str, *, swap_channels: bool = True,
                        check_files: bool = True) -> LabelledFiles:
    """<root>/bmk_<level>/<part>.csv with images in bmk_<level>/<part>/: labels (N, 1) at that level."""
    if level not in LEVELS or part not in PARTS:
        raise LowlabelError(f"benchmark '{level}/{part}': level is one of {LEVELS}, part one of {PARTS}")
    source = Path(root) / f"bmk_{level}" / f"{part}.csv"
    records = read_label_file(source)
    if len(records[0]) != 2:
        raise LowlabelError(f"{source}: rows have {len(records[0]) - 1} labels; benchmark lists are 'fname, label'")
    labels = np.array([r[1:] for r in records], dtype=np.int64)
    return LabelledFiles(_files(source.parent / part, [r[0] for r in records], source, check_files), labels,
                         swap_channels)


def read_dyml_product_test(root: str | Path, *, swap_channels: bool = True, check_files: bool = True) -> LabelledFiles:
    """DyML-Product's test set <root>/mini-bmk_all_in_one/label.csv + imgs/: labels (N, 3) (fine, middle, coarse)."""
    source = Path(root) / "mini-bmk_all_in_one" / "label.csv"
    records = read_label_file(source)
    if len(records[0]) != 4:
        raise LowlabelError(f"{source}: rows have {len(records[0]) - 1} label(s); expected 'fname, coarse, middle, "
                            "fine'")
    labels = np.array([r[:0:-1] for r in records], dtype=np.int64)
    return LabelledFiles(_files(source.parent / "imgs", [r[0] for r in records], source, check_files), labels,
                         swap_channels)


def _class_ids(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Contiguous ids of string class names, sorted numerically when all are integers, else as text."""
    unique = set(values)
    key = int if all(re.fullmatch(r"[+-]?\d+", v) for v in unique) else str
    names = sorted(unique, key=key)
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[v] for v in values], dtype=np.int64), names


def read_hierarchy_csv(path: str | Path, *, swap_channels: bool = False, check_files: bool = True) -> LabelledFiles:
    """A generic CSV of `path, fine, middle, coarse` rows (an optional header whose first field is path/fname/file).

    Image paths are taken relative to the CSV's folder unless absolute; labels may be any text (class names or
    ids) and become contiguous ids per level (`names` keeps the original labels). Images are read as stored RGB
    unless `swap_channels`. Raises a LowlabelError naming the file and line for a row without four fields, and for
    a fine class with two middle or coarse labels.
    """
    path = Path(path)
    if not path.is_file():
        raise LowlabelError(f"{path}: CSV file not found; check the path")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [(n, [f.strip() for f in row]) for n, row in enumerate(csv.reader(fh), start=1) if any(row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise LowlabelError(f"{path}: not a UTF-8 CSV of 'path, fine, middle, coarse' rows ({err})") from None
    if rows and rows[0][1][0].lower() in _CSV_HEADER_NAMES:
        rows = rows[1:]
    if not rows:
        raise LowlabelError(f"{path}: no rows; expected 'path, fine, middle, coarse' per line")
    for number, fields in rows:
        if len(fields) != 4 or not all(fields):
            raise LowlabelError(f"{path}, line {number}: expected 4 non-empty fields 'path, fine, middle, coarse', "
                                f"got {fields}")
    columns = [_class_ids([f[c] for _, f in rows]) for c in (1, 2, 3)]
    labels = np.stack([ids for ids, _ in columns], axis=1)
    check_tree(labels, str(path))
    paths = [p if p.is_absolute() else path.parent / p for p in (Path(f[0]) for _, f in rows)]
    if check_files:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise LowlabelError(f"{path}: {len(missing)} image(s) not found, e.g. {missing[:3]}; paths are relative "
                                "to the CSV's folder")
    return LabelledFiles(paths, labels, swap_channels, tuple(names for _, names in columns))


def contiguous_labels(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Remap every column to 0..C_l-1 (sorted ids, as [H]); returns the new labels and each level's original ids."""
    originals, columns = [], []
    for column in labels.T:
        ids, inverse = np.unique(column, return_inverse=True)
        originals.append(ids)
        columns.append(inverse.reshape(-1))
    return np.stack(columns, axis=1).astype(np.int64), originals


def open_set_split(labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole fine classes for testing (open-set, as the benchmark): (train indices, test indices).

    labels: (N, L) with fine in column 0, middle in column 1. Within every middle class, round(holdout * n_fine)
    fine classes (at least 1 and at most n_fine - 1 when it has two or more) go to the test side, chosen by a
    permutation from `seed`; the same labels and seed always give the same split.
    """
    if not 0.0 < holdout < 1.0:
        raise LowlabelError(f"holdout={holdout}: give the fraction of fine classes to hold out, in (0, 1)")
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for middle in np.unique(labels[:, 1]):
        fine = np.unique(labels[labels[:, 1] == middle, 0])
        if len(fine) < 2:
            continue
        k = min(max(round(holdout * len(fine)), 1), len(fine) - 1)
        held += fine[rng.permutation(len(fine))[:k]].tolist()
    test = np.isin(labels[:, 0], held)
    return np.flatnonzero(~test), np.flatnonzero(test)


def tuning_split(labels: np.ndarray, holdout: float = 0.25, seed: int = 0,
                 tuning_seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A split for choosing settings that never sees the evaluation's test classes: the training side of
    `open_set_split(labels, holdout, seed)`, split again the same way by `tuning_seed` -> (tuning train, tuning test)
    indices into `labels`; the classes `open_set_split` holds out are in neither."""
    train, _ = open_set_split(labels, holdout, seed)
    inner_train, inner_test = open_set_split(labels[train], holdout, tuning_seed)
    return train[inner_train], train[inner_test]


# Omniglot: coarse level = writing-system type. Coarse id = index in SYSTEM_TYPES (fixed, so subsets agree).
SYSTEM_TYPES = ("alphabet", "abugida", "abjad", "syllabary", "featural")
WRITING_SYSTEMS: dict[str, str] = {
    # the 30 alphabets of Omniglot's background set (omniglot_small holds 8 of them)
    "Alphabet_of_the_Magi": "alphabet",  # occult script, one letter per Latin letter
    "Anglo-Saxon_Futhorc": "alphabet",  # runes, consonant and vowel letters
    "Arcadian": "alphabet",  # constructed script, one letter per Latin letter
    "Armenian": "alphabet",  # Mesrop Mashtots' alphabet, full vowels
    "Asomtavruli_(Georgian)": "alphabet",  # oldest Georgian script, full vowels
    "Balinese": "abugida",  # Brahmic: consonants carry an inherent vowel changed by marks
    "Bengali": "abugida",  # Brahmic
    "Blackfoot_(Canadian_Aboriginal_Syllabics)": "abugida",  # Canadian syllabics: vowel shown by rotating a consonant
    "Braille": "alphabet",  # tactile cells for the Latin letters
    "Burmese_(Myanmar)": "abugida",  # Brahmic
    "Cyrillic": "alphabet",  # full vowels
    "Early_Aramaic": "abjad",  # consonants only
    "Futurama": "alphabet",  # the show's alien substitution of Latin letters
    "Grantha": "abugida",  # Brahmic
    "Greek": "alphabet",  # the first alphabet with full vowel letters
    "Gujarati": "abugida",  # Brahmic
    "Hebrew": "abjad",  # consonants; vowels as optional points
    "Inuktitut_(Canadian_Aboriginal_Syllabics)": "abugida",  # Canadian syllabics, as Blackfoot
    "Japanese_(hiragana)": "syllabary",  # one sign per mora, not decomposable
    "Japanese_(katakana)": "syllabary",  # one sign per mora, not decomposable
    "Korean": "featural",  # Hangul: letter shapes encode articulatory features
    "Latin": "alphabet",  # full vowels
    "Malay_(Jawi_-_Arabic)": "abjad",  # Arabic script
    "Mkhedruli_(Georgian)": "alphabet",  # modern Georgian script
    "N_Ko": "alphabet",  # Manding alphabet with vowel letters
    "Ojibwe_(Canadian_Aboriginal_Syllabics)": "abugida",  # Canadian syllabics, as Blackfoot
    "Sanskrit": "abugida",  # written in Devanagari, Brahmic
    "Syriac_(Estrangelo)": "abjad",  # consonants; vowels as optional points
    "Tagalog": "abugida",  # Baybayin, Brahmic
    "Tifinagh": "alphabet",  # the Neo-Tifinagh letter set, with vowel letters (the old script was an abjad)
    # the 20 alphabets of the evaluation set
    "Angelic": "alphabet",  # occult script, one letter per Latin letter
    "Atemayar_Qelisayer": "alphabet",  # constructed script (Omniglot site); treated as an alphabet
    "Atlantean": "alphabet",  # constructed for a film, one letter per Latin letter
    "Aurek-Besh": "alphabet",  # constructed (Star Wars), one letter per Latin letter
    "Avesta": "alphabet",  # Avestan, full vowels
    "Ge_ez": "abugida",  # Ethiopic: vowel shown by modifying the consonant
    "Glagolitic": "alphabet",  # oldest Slavic alphabet
    "Gurmukhi": "abugida",  # Brahmic
    "Kannada": "abugida",  # Brahmic
    "Keble": "alphabet",  # constructed script (Omniglot site); treated as an alphabet
    "Malayalam": "abugida",  # Brahmic
    "Manipuri": "abugida",  # Meitei Mayek, Brahmic
    "Mongolian": "alphabet",  # traditional vertical script, full vowels
    "Old_Church_Slavonic_(Cyrillic)": "alphabet",  # early Cyrillic
    "Oriya": "abugida",  # Brahmic
    "Sylheti": "abugida",  # Syloti Nagri, Brahmic
    "Syriac_(Serto)": "abjad",  # western Syriac form, consonants
    "Tengwar": "featural",  # Tolkien's script: letter shapes follow place and manner of articulation
    "Tibetan": "abugida",  # Brahmic
    "ULOG": "alphabet",  # constructed script (Omniglot site); treated as an alphabet
}


@dataclass
class OmniglotSet:
    """Omniglot as a three-level hierarchy: images uint8 (N, H, W) as stored (white background, dark strokes),
    labels int64 (N, 3) = (character, alphabet, writing-system type), drawers (N,) int64, keys (N,) the entries'
    `<alphabet>/<character>/<file>` paths, names per level (character `<alphabet>/<character>`, alphabet, type)."""

    images: np.ndarray
    labels: np.ndarray
    drawers: np.ndarray
    keys: list[str]
    names: tuple[list[str], list[str], list[str]]


def _png_entries(source: Path) -> Iterator[tuple[str, bytes]]:
    """(`<alphabet>/<character>/<file>`, PNG bytes) of a zip or folder of Omniglot images (top folders ignored)."""
    if source.is_dir():
        for png in sorted(source.rglob("*.png")):
            parts = png.relative_to(source).parts
            if len(parts) >= 3 and not any(p.startswith(".") for p in parts):
                yield "/".join(parts[-3:]), png.read_bytes()
        return
    if not source.is_file():
        raise LowlabelError(f"{source}: not found; give Omniglot zip files or their extracted folders")
    try:
        with zipfile.ZipFile(source) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if name.lower().endswith(".png") and len(parts) >= 3 and not any(
                        p.startswith((".", "__MACOSX")) for p in parts):
                    yield "/".join(parts[-3:]), archive.read(name)
    except zipfile.BadZipFile:
        raise LowlabelError(f"{source}: not a readable zip file; re-download it") from None


def read_omniglot(sources: str | Path | Sequence[str | Path],
                  writing_systems: Mapping[str, str] | None = None) -> OmniglotSet:
    """Read Omniglot zips (or folders) of `<alphabet>/<character>/<id>_<drawer>.png` into an `OmniglotSet`.

    Entries present in several sources (omniglot_small repeats Greek and Latin) are kept once when byte-identical
    and raise a LowlabelError when they differ. Ids: characters and alphabets in sorted name order; types by their
    index in SYSTEM_TYPES, from `writing_systems` (default WRITING_SYSTEMS; an alphabet missing there raises).
    """
    systems = WRITING_SYSTEMS if writing_systems is None else writing_systems
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    found: dict[str, tuple[bytes, Path]] = {}
    for source in map(Path, sources):
        for key, data in _png_entries(source):
            if key in found and found[key][0] != data:
                raise LowlabelError(f"{key}: differs between {found[key][1]} and {source}; give each image once")
            found.setdefault(key, (data, source))
    if not found:
        raise LowlabelError(f"{', '.join(map(str, sources))}: no <alphabet>/<character>/<file>.png image found")
    keys = sorted(found)
    alphabets = sorted({k.split("/")[0] for k in keys})
    unknown = [a for a in alphabets if systems.get(a) not in SYSTEM_TYPES]
    if unknown:
        raise LowlabelError(f"alphabet(s) {unknown} have no writing-system type; pass writing_systems={{name: type}} "
                            f"with a type from {SYSTEM_TYPES}")
    characters = sorted({k.rsplit("/", 1)[0] for k in keys})
    char_id, alpha_id = {c: i for i, c in enumerate(characters)}, {a: i for i, a in enumerate(alphabets)}
    images, labels, drawers = [], [], []
    for key in keys:
        alphabet, character, file = key.split("/")
        drawer = re.fullmatch(r"[^_]+_(\d+)\.png", file, re.IGNORECASE)
        if drawer is None:
            raise LowlabelError(f"{found[key][1]}: entry {key} is not named <id>_<drawer>.png")
        images.append(_decode_gray(found[key][0], f"{found[key][1]}: {key}"))
        labels.append((char_id[f"{alphabet}/{character}"], alpha_id[alphabet], SYSTEM_TYPES.index(systems[alphabet])))
        drawers.append(int(drawer.group(1)))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise LowlabelError(f"Omniglot images have several sizes {sorted(shapes)[:4]}; resize them to one size")
    return OmniglotSet(np.stack(images), np.array(labels, dtype=np.int64), np.array(drawers, dtype=np.int64), keys,
                       (characters, alphabets, list(SYSTEM_TYPES)))


def _decode_gray(data: bytes, where: str) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) greyscale (Omniglot's 1-bit images become 0 / 255)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise LowlabelError(f"{where}: not a readable PNG ({err}); re-extract the archive") from None
