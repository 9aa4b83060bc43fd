"""SDD-FIQA reader (folder per identity, corrupt file), extractors, embedding cache and the `fiqa` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa.cli import app
from lowlabel.methods.sdd_fiqa.data import read_identity_folders, read_labels, write_labels
from lowlabel.methods.sdd_fiqa.extractors import TorchScriptExtractor, embed_files


def _folder(root: Path, n_ids: int = 4, per_id: int = 9) -> Path:
    rng = np.random.default_rng(0)
    for k in range(n_ids):
        (root / f"id_{k:02d}").mkdir(parents=True)
        base = rng.integers(0, 255, (1, 1, 3))
        for j in range(per_id):
            img = np.clip(base + rng.normal(0, 10 + 8 * j, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"id_{k:02d}" / f"{j}.png")
    return root


class _Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_reader_orders_identities_and_names_a_corrupt_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 3, 2)
    folder = read_identity_folders(root)
    assert folder.names == ["id_00", "id_01", "id_02"] and folder.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name for p in folder.paths] == ["0.png", "1.png"] * 3
    bad = root / "id_01" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    extractor = TorchScriptExtractor(_script(tmp_path), size=16)
    with pytest.raises(LowlabelError, match=r"broken\.jpg"):
        embed_files(extractor, read_identity_folders(root).paths)
    (root / "loose.png").write_bytes((root / "id_00" / "0.png").read_bytes())
    with pytest.raises(LowlabelError, match=r"loose\.png"):
        read_identity_folders(root)


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "rec.pt"
    torch.jit.script(_Mean()).save(str(path))
    return path


def test_embedding_cache_is_keyed_by_files(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 2, 3)
    paths = read_identity_folders(root).paths
    extractor = TorchScriptExtractor(_script(tmp_path), size=16)
    first = embed_files(extractor, paths, cache_dir=tmp_path / "cache")
    assert first.shape == (6, 6) and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    np.testing.assert_array_equal(embed_files(extractor, paths, cache_dir=tmp_path / "cache"), first)
    embed_files(extractor, paths[:4], cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_labels_roundtrip_and_official_format(tmp_path: Path) -> None:
    write_labels(tmp_path / "l.csv", [Path("a/1.jpg"), Path("b/2.jpg")], np.array([0, 1]), np.array([12.5, np.nan]))
    paths, q = read_labels(tmp_path / "l.csv")
    assert paths == [Path("a/1.jpg")] and q.tolist() == [12.5]
    (tmp_path / "official.txt").write_text("/root/a/1.jpg\t33.5\n/root/b/2.jpg\t70.25\n")
    paths, q = read_labels(tmp_path / "official.txt")
    assert paths[1] == Path("/root/b/2.jpg") and q.tolist() == [33.5, 70.25]


def test_cli_label_and_evrc(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 4, 9)
    runner = CliRunner()
    res = runner.invoke(app, ["label", str(root), "--recognizer", str(_script(tmp_path)), "--size", "16",
                              "--out", str(tmp_path / "labels.csv"), "--repeats", "2"])
    assert res.exit_code == 0, res.output
    paths, q = read_labels(tmp_path / "labels.csv")
    assert len(paths) == 36 and q.min() >= 0 and q.max() <= 100
    res = runner.invoke(app, ["label", str(root), "--recognizer", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and "missing.pt" in res.output
    rng = np.random.default_rng(0)
    rows = ["score,genuine,quality_a,quality_b"]
    rows += [f"{0.4 * qa + 0.05 * rng.normal()},1,{qa},{rng.random()}" for qa in rng.random(200)]
    rows += [f"{0.1 * rng.normal()},0,{rng.random()},{rng.random()}" for _ in range(2000)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows))
    res = runner.invoke(app, ["evrc", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "e.png"), "--fmr", "0.01"])
    assert res.exit_code == 0, res.output
    assert "AOC" in res.output and (tmp_path / "e.png").is_file()


def test_dlib_extractor_on_a_synthetic_face() -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from lowlabel.data.synth.faces import FacesConfig, FacesDataset
    from lowlabel.methods.sdd_fiqa.extractors import DlibExtractor

    img = FacesDataset(1, 1, cfg=FacesConfig(size=112, clean_fraction=1.0)).sample(0).image
    emb = DlibExtractor().embed([img, img[:, ::-1]])
    assert emb.shape == (2, 128) and np.isfinite(emb).all()
    assert np.linalg.norm(emb[0] - emb[1]) < 0.6  # a face and its mirror image: same person for dlib


def test_cli_train_then_score(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 4, 9)
    runner = CliRunner()
    res = runner.invoke(app, ["label", str(root), "--recognizer", str(_script(tmp_path)), "--size", "16",
                              "--out", str(tmp_path / "labels.csv"), "--repeats", "2"])
    assert res.exit_code == 0, res.output
    (tmp_path / "c.yaml").write_text("image_size: 16\nwidth: 4\nbatch_size: 12\nlabels_file: ignored.csv\n")
    res = runner.invoke(app, ["train", str(root), "--labels", str(tmp_path / "labels.csv"), "--out",
                              str(tmp_path / "runs"), "--config", str(tmp_path / "c.yaml"), "--device", "cpu",
                              "--set", "train.epochs=0", "--set", "train.max_steps=2", "--set", "train.log_every=1"])
    assert res.exit_code == 0, res.output
    assert "steps 2" in res.output
    run = next((tmp_path / "runs" / "sdd_fiqa").iterdir())
    saved = (run / "config.yaml").read_text()
    assert f"labels_file: {tmp_path / 'labels.csv'}" in saved  # --labels beats --config
    assert "max_steps: 2" in saved and "width: 4" in saved  # --set and --config kept
    checkpoint = next((run / "checkpoints").glob("step_*.pt"))
    images = [str(p) for p in sorted((root / "id_00").iterdir())[:3]]
    res = runner.invoke(app, ["score", *images, "--model", str(checkpoint), "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "path,score" and len(rows) == 4 and all(np.isfinite(float(r.split(",")[1])) for r in rows[1:])
    (run / "config.yaml").write_text(saved.replace("width: 4", "width: 8"))
    res = runner.invoke(app, ["score", *images, "--model", str(checkpoint)])
    assert res.exit_code == 2 and "does not fit" in res.output
