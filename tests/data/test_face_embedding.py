"""Face embeddings of files: the cache is keyed by the files and survives a damaged entry; a corrupt image is named;
dlib's recogniser (when the [face] extra is installed) maps a face and its mirror image close together."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.data.face_embedding import embed_files
from lowlabel.errors import LowlabelError


class MeanColour:
    """A stand-in extractor: each image's mean red, green and blue; counts the images it embeds."""

    name = "mean_colour"

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.embedded += len(images)
        return np.stack([img.reshape(-1, 3).mean(0) for img in images]).astype(np.float32)


def _images(folder: Path, colours: list[tuple[int, int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(colours):
        paths.append(folder / f"face {i}.png")
        Image.new("RGB", (8, 6), colour).save(paths[-1])
    return paths


def test_embeddings_are_cached_per_file_list_and_a_damaged_entry_is_recomputed(tmp_path: Path) -> None:
    paths = _images(tmp_path / "faces", [(10, 20, 30), (200, 100, 0), (0, 0, 255)])
    extractor, cache = MeanColour(), tmp_path / "cache"
    first = embed_files(extractor, paths, cache_dir=cache)
    np.testing.assert_array_equal(first, [[10, 20, 30], [200, 100, 0], [0, 0, 255]])
    (entry,) = cache.glob("*.npz")
    np.testing.assert_array_equal(embed_files(extractor, paths, cache_dir=cache), first)
    assert extractor.embedded == 3  # the second call read the cache
    entry.write_bytes(b"PK\x03\x04 truncated")
    np.testing.assert_array_equal(embed_files(extractor, paths, cache_dir=cache), first)
    assert extractor.embedded == 6  # recomputed, not an error
    embed_files(extractor, paths[:2], cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2  # another file list, another entry
    Image.new("RGB", (8, 6), (1, 2, 3)).save(paths[0])  # an edited file is embedded again
    np.testing.assert_array_equal(embed_files(extractor, paths, cache_dir=cache)[0], [1, 2, 3])
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]


def test_a_corrupt_image_is_named(tmp_path: Path) -> None:
    paths = _images(tmp_path, [(1, 1, 1)])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(LowlabelError, match=r"broken\.jpg"):
        embed_files(MeanColour(), [*paths, bad])


def test_dlib_embeds_a_face_and_its_mirror_image_as_one_person() -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from lowlabel.data.face_embedding import DlibEmbedder
    from lowlabel.data.synth.faces import FacesConfig, FacesDataset

    img = FacesDataset(1, 1, cfg=FacesConfig(size=112, clean_fraction=1.0)).sample(0).image
    emb = DlibEmbedder().embed([img, img[:, ::-1]])
    assert emb.shape == (2, 128) and np.isfinite(emb).all()
    assert np.linalg.norm(emb[0] - emb[1]) < 0.6  # dlib's same-person threshold
