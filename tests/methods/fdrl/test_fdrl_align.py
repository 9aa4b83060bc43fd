"""dlib face alignment of user photos: misses (error/skip/keep), the cache, and real FER2013 faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlabel.errors import LowlabelError

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lowlabel.data.io import read_image
from lowlabel.methods.fdrl.align import FaceAligner, align_files


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(size=32)


def blank(path: Path) -> Path:
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(path)
    return path


def test_photo_without_face(tmp_path: Path, aligner: FaceAligner) -> None:
    photo = blank(tmp_path / "wall.png")
    with pytest.raises(LowlabelError, match=r"wall\.png: no face found"):
        align_files([photo], tmp_path / "cache", aligner=aligner)
    assert align_files([photo], tmp_path / "cache", aligner=aligner, on_missing="skip") == [None]
    assert len(list((tmp_path / "cache").glob("*.noface"))) == 1
    (kept,) = align_files([photo], tmp_path / "cache", aligner=aligner, on_missing="keep")
    assert kept is not None and read_image(kept).shape == (32, 32, 3)
    with pytest.raises(LowlabelError, match=r"gone\.png: image not found"):
        align_files([tmp_path / "gone.png"], tmp_path / "cache", aligner=aligner)
    with pytest.raises(LowlabelError, match="on_missing"):
        align_files([photo], tmp_path / "cache", aligner=aligner, on_missing="ignore")


@pytest.mark.realdata
def test_real_faces_are_aligned_once(shared_data: Path, tmp_path: Path, aligner: FaceAligner,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # FER2013 48x48 crops in which dlib's detector finds the face after one upsampling
    names = ["PrivateTest_10077120.jpg", "PrivateTest_10513598.jpg", "PrivateTest_1140198.jpg"]
    photos = [shared_data / "fer2013" / "test" / "happy" / n for n in names]
    chips = align_files(photos, tmp_path / "cache", aligner=aligner)
    assert all(c is not None and read_image(c).shape == (32, 32, 3) for c in chips)
    assert len(set(chips)) == 3
    stamps = [c.stat().st_mtime_ns for c in chips]

    def fail(image: np.ndarray) -> np.ndarray | None:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(aligner, "align", fail)
    assert align_files(photos, tmp_path / "cache", aligner=aligner) == chips
    assert [c.stat().st_mtime_ns for c in chips] == stamps
