"""The Omniglot reader: a tiny zip and folder the test writes, duplicates across zips, and the real zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.errors import LowlabelError
from lowlabel.methods.dyml import data


def _png_bytes(value: int, size: int = 6) -> bytes:
    img = np.full((size, size), 255, dtype=np.uint8)
    img[value % size, :] = 0
    buf = io.BytesIO()
    Image.fromarray(img).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, top: str, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/", b"")
        for name, payload in entries.items():
            archive.writestr(f"{top}/{name}", payload)
    return path


ENTRIES = {
    "Korean/character01/0001_01.png": _png_bytes(0),
    "Korean/character01/0001_02.png": _png_bytes(1),
    "Korean/character02/0002_01.png": _png_bytes(2),
    "Greek/character01/0101_07.png": _png_bytes(3),
}


def test_tiny_zips_with_duplicates_give_three_levels(tmp_path: Path) -> None:
    first = _zip(tmp_path / "a.zip", "images_a", ENTRIES)
    second = _zip(tmp_path / "b.zip", "images_b", {
        "Greek/character01/0101_07.png": _png_bytes(3),  # byte-identical repeat: kept once
        "Tagalog/character05/0300_02.png": _png_bytes(4),
        "Tagalog/character05/notes.txt": b"ignored",
    })
    got = data.read_omniglot([first, second])
    assert got.keys == ["Greek/character01/0101_07.png", "Korean/character01/0001_01.png",
                        "Korean/character01/0001_02.png", "Korean/character02/0002_01.png",
                        "Tagalog/character05/0300_02.png"]
    assert got.names[0] == ["Greek/character01", "Korean/character01", "Korean/character02", "Tagalog/character05"]
    assert got.names[1] == ["Greek", "Korean", "Tagalog"]
    alphabet, featural, abugida = (data.SYSTEM_TYPES.index(t) for t in ("alphabet", "featural", "abugida"))
    assert got.labels.tolist() == [[0, 0, alphabet], [1, 1, featural], [1, 1, featural], [2, 1, featural],
                                   [3, 2, abugida]]
    assert got.drawers.tolist() == [7, 1, 2, 1, 2]
    assert got.images.shape == (5, 6, 6) and got.images.dtype == np.uint8
    assert set(np.unique(got.images)) == {0, 255} and (got.images[1, 0] == 0).all()  # stroke row 0, white elsewhere


def test_folder_input_and_custom_types(tmp_path: Path) -> None:
    for name, payload in ENTRIES.items():
        (tmp_path / "omni" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "omni" / name).write_bytes(payload)
    got = data.read_omniglot(tmp_path / "omni", writing_systems={"Korean": "syllabary", "Greek": "abjad"})
    assert got.labels[:, 2].tolist() == [data.SYSTEM_TYPES.index("abjad")] + [data.SYSTEM_TYPES.index("syllabary")] * 3


def test_errors_name_the_problem(tmp_path: Path) -> None:
    first = _zip(tmp_path / "a.zip", "x", ENTRIES)
    clash = _zip(tmp_path / "b.zip", "y", {"Greek/character01/0101_07.png": _png_bytes(5)})
    with pytest.raises(LowlabelError, match="differs between"):
        data.read_omniglot([first, clash])
    unknown = _zip(tmp_path / "c.zip", "z", {"Klingon/character01/0001_01.png": _png_bytes(0)})
    with pytest.raises(LowlabelError, match=r"\['Klingon'\] have no writing-system type"):
        data.read_omniglot(unknown)
    badname = _zip(tmp_path / "d.zip", "z", {"Greek/character01/first.png": _png_bytes(0)})
    with pytest.raises(LowlabelError, match=r"not named <id>_<drawer>\.png"):
        data.read_omniglot(badname)
    corrupt = _zip(tmp_path / "e.zip", "z", {"Greek/character01/0001_01.png": b"not a png"})
    with pytest.raises(LowlabelError, match="not a readable PNG"):
        data.read_omniglot(corrupt)
    (tmp_path / "f.zip").write_bytes(b"garbage")
    with pytest.raises(LowlabelError, match="not a readable zip"):
        data.read_omniglot(tmp_path / "f.zip")
    with pytest.raises(LowlabelError, match="not found"):
        data.read_omniglot(tmp_path / "none.zip")


@pytest.mark.realdata
def test_real_omniglot_small(shared_data: Path) -> None:
    folder = shared_data / "omniglot_small"
    zips = [folder / "images_background_small1.zip", folder / "images_background_small2.zip"]
    if not all(z.is_file() for z in zips):
        pytest.skip(f"omniglot_small zips not found in {folder}")
    got = data.read_omniglot(zips)
    assert got.images.shape == (4840, 105, 105)  # 242 characters x 20 drawers; Greek and Latin kept once
    assert got.labels[:, 0].max() + 1 == 242 and len(got.names[1]) == 8
    assert np.bincount(got.labels[:, 0]).tolist() == [20] * 242
    assert all(sorted(got.drawers[got.labels[:, 0] == c].tolist()) == list(range(1, 21)) for c in (0, 100, 241))
    per_type = dict(zip(data.SYSTEM_TYPES, np.bincount(got.labels[:, 2], minlength=5).tolist(), strict=True))
    # alphabet: Greek 24 + Latin 26 characters; abugida: Balinese 24, Sanskrit 42, Tagalog 17; abjad: Early
    # Aramaic 22; syllabary: katakana 47; featural: Korean 40 (x 20 drawers each)
    assert per_type == {"alphabet": 1000, "abugida": 1660, "abjad": 440, "syllabary": 940, "featural": 800}
    # the benchmark's splits (benchmarks/dyml_omniglot.py): per alphabet round(n / 4) characters held out for
    # evaluation (Greek 24 -> 6, Latin 26 -> 6 (banker's rounding of 6.5), Balinese 6, Sanskrit 10 (10.5),
    # Tagalog 4, Aramaic 6 (5.5), katakana 12, Korean 10 = 60); tuning: a quarter of each alphabet's rest again
    _, eval_test = data.open_set_split(got.labels, 0.25, 0)
    tune_train, tune_test = data.tuning_split(got.labels, 0.25, 0, 1)
    held, tuning = set(got.labels[eval_test, 0]), set(got.labels[tune_test, 0])
    assert len(held) == 60 and len(tuning) == 45 and len(set(got.labels[tune_train, 0])) == 137
    assert not held & (tuning | set(got.labels[tune_train, 0]))
