"""SDD-FIQA readers (folder per identity, label files, precomputed embeddings), extractors, verification pairs built
from identity folders, and the `fiqa` commands in-process."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from lowlabel.data.face_embedding import embed_files
from lowlabel.errors import LowlabelError
from lowlabel.methods.sdd_fiqa import evaluation
from lowlabel.methods.sdd_fiqa.data import (
    read_embeddings,
    read_identity_folders,
    read_labels,
    read_scores,
    write_labels,
)
from lowlabel.methods.sdd_fiqa.extractors import TorchScriptExtractor
from lowlabel_cli import run_here


def test_reader_orders_identities_and_names_a_corrupt_file(folder, mean_std_script) -> None:
    root = folder(3, 2)
    listing = read_identity_folders(root)
    assert listing.names == ["member 00", "member 01", "member 02"] and listing.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name for p in listing.paths] == ["frame_0.png", "frame_1.png"] * 3
    bad = root / "member 01" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(LowlabelError, match=r"broken\.jpg"):
        embed_files(TorchScriptExtractor(mean_std_script, size=16), read_identity_folders(root).paths)
    (root / "loose.png").write_bytes((root / "member 00" / "frame_0.png").read_bytes())
    with pytest.raises(LowlabelError, match=r"loose\.png"):
        read_identity_folders(root)


def test_labels_roundtrip_and_official_format(tmp_path) -> None:
    write_labels(tmp_path / "l.csv", [Path("a/1.jpg"), Path("b,2.jpg")], np.array([0, 1]), np.array([12.5, np.nan]))
    paths, q = read_labels(tmp_path / "l.csv")
    assert paths == [Path("a/1.jpg")] and q.tolist() == [12.5]
    (tmp_path / "official.txt").write_text("/root/a/1.jpg\t33.5\n/root/b/2.jpg\t70.25\n")
    paths, q = read_labels(tmp_path / "official.txt")
    assert paths[1] == Path("/root/b/2.jpg") and q.tolist() == [33.5, 70.25]
    (tmp_path / "cut.csv").write_text("path,identity,quality\na/1.jpg,0,12.5\nb/2.jpg,1,")
    with pytest.raises(LowlabelError, match=r"cut\.csv: line 3"):
        read_labels(tmp_path / "cut.csv")


def test_precomputed_embeddings_in_folder_order_or_by_path(folder, tmp_path) -> None:
    root = folder(3, 2)
    listing = read_identity_folders(root)
    emb = np.arange(18, dtype=np.float32).reshape(6, 3) + 1
    np.save(tmp_path / "e.npy", emb)
    np.testing.assert_array_equal(read_embeddings(tmp_path / "e.npy", listing, root), emb)
    reverse = [str(p.relative_to(root)) for p in listing.paths][::-1]
    np.savez(tmp_path / "e.npz", embeddings=emb[::-1], paths=np.array(reverse))
    np.testing.assert_array_equal(read_embeddings(tmp_path / "e.npz", listing, root), emb)
    np.save(tmp_path / "short.npy", emb[:5])
    with pytest.raises(LowlabelError, match=r"short\.npy.*N = 6"):
        read_embeddings(tmp_path / "short.npy", listing, root)
    emb[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", emb)
    with pytest.raises(LowlabelError, match=r"nan\.npy: the embedding of .*frame_0\.png \(row 4\)"):
        read_embeddings(tmp_path / "nan.npy", listing, root)


def _brute_force_pairs(labels: list[int]) -> tuple[set, set]:
    pairs = list(combinations(range(len(labels)), 2))
    return ({p for p in pairs if labels[p[0]] == labels[p[1]]}, {p for p in pairs if labels[p[0]] != labels[p[1]]})


def test_verification_pairs_enumerated_then_subsampled() -> None:
    labels = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    genuine, impostor = _brute_force_pairs(labels)  # 3 + 1 + 6 = 10 genuine, 45 - 10 = 35 impostor
    gen, imp = evaluation.sample_verification_pairs(np.array(labels), max_genuine=100, max_impostor=100)
    assert set(map(tuple, gen.tolist())) == genuine and set(map(tuple, imp.tolist())) == impostor
    gen, imp = evaluation.sample_verification_pairs(np.array(labels), max_genuine=4, max_impostor=20, seed=3)
    assert len(gen) == 4 and set(map(tuple, gen.tolist())) <= genuine
    assert len(set(map(tuple, imp.tolist()))) == 20 and set(map(tuple, imp.tolist())) <= impostor
    again = evaluation.sample_verification_pairs(np.array(labels), max_genuine=4, max_impostor=20, seed=3)
    assert np.array_equal(again[0], gen) and np.array_equal(again[1], imp)


def test_drawn_pairs_are_distinct_valid_and_uniform(monkeypatch) -> None:
    monkeypatch.setattr(evaluation, "ENUMERATE_UP_TO", 0)  # force the drawing path on a set small enough to check
    labels = np.repeat(np.arange(6), [2, 3, 4, 5, 6, 10])
    genuine, impostor = _brute_force_pairs(labels.tolist())
    counts = dict.fromkeys(genuine, 0)
    for seed in range(300):
        gen, imp = evaluation.sample_verification_pairs(labels, max_genuine=10, max_impostor=50, seed=seed)
        assert len(set(map(tuple, gen.tolist()))) == 10 and set(map(tuple, gen.tolist())) <= genuine
        assert len(set(map(tuple, imp.tolist()))) == 50 and set(map(tuple, imp.tolist())) <= impostor
        for p in map(tuple, gen.tolist()):
            counts[p] += 1
    expected = 300 * 10 / len(genuine)  # 97 genuine pairs, each kept with the same probability
    assert max(abs(c - expected) for c in counts.values()) < 5 * expected**0.5


def test_folder_pairs_scores_by_hand() -> None:
    emb = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0]])
    table = evaluation.folder_pairs(np.array([0, 0, 1]), emb, np.array([5.0, 2.0, 7.0]), max_genuine=10,
                                    max_impostor=10)
    assert table["genuine"].tolist() == [True, False, False]  # (0, 1) genuine; (0, 2), (1, 2) impostor
    np.testing.assert_allclose(table["score"], [0.6, 0.0, 0.8])
    np.testing.assert_allclose(table["quality"], [2.0, 5.0, 2.0])


def test_scores_file_maps_relative_paths(folder, tmp_path, monkeypatch) -> None:
    root = folder(2, 2)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.csv").write_text(f"path,score\nfaces/member 00/frame_0.png,1.5\n{root}/member 01/frame_1.png,2\n"
                                    "member 00/frame_1.png,3\n")
    got = read_scores(tmp_path / "s.csv", root)
    assert got[(root / "member 00" / "frame_0.png").resolve()] == 1.5
    assert got[(root / "member 01" / "frame_1.png").resolve()] == 2.0
    assert got[(root / "member 00" / "frame_1.png").resolve()] == 3.0  # relative to the data folder


def test_cli_label_evrc_and_errors(folder, mean_std_script, tmp_path) -> None:
    root = folder(4, 9)
    code, out = run_here("fiqa", "label", root, "--recognizer", mean_std_script, "--size", 16, "--out",
                         tmp_path / "labels.csv", "--repeats", 2)
    assert code == 0, out
    paths, q = read_labels(tmp_path / "labels.csv")
    assert len(paths) == 36 and q.min() == 0 and q.max() == 100
    code, out = run_here("fiqa", "label", root, "--recognizer", "builtin")
    assert code == 2 and "lowlabel fiqa recognizer" in out  # the command it names exists
    assert "recognizer" in run_here("fiqa", "--help")[1]
    code, out = run_here("fiqa", "label", root, "--recognizer", tmp_path / "missing.pt")
    assert code == 2 and "missing.pt" in out
    rng = np.random.default_rng(0)
    rows = ["score,genuine,quality_a,quality_b"]
    rows += [f"{0.4 * qa + 0.05 * rng.normal()},1,{qa},{rng.random()}" for qa in rng.random(200)]
    rows += [f"{0.1 * rng.normal()},0,{rng.random()},{rng.random()}" for _ in range(2000)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows))
    code, out = run_here("fiqa", "evrc", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "e.png", "--fmr",
                         0.01)
    assert code == 0, out
    assert "AOC" in out and (tmp_path / "e.png").is_file() and (tmp_path / "e.json").is_file()


def test_cli_train_then_score(folder, mean_std_script, tmp_path) -> None:
    root = folder(4, 9)
    assert run_here("fiqa", "label", root, "--recognizer", mean_std_script, "--size", 16, "--out",
                    tmp_path / "labels.csv", "--repeats", 2)[0] == 0
    (tmp_path / "c.yaml").write_text("image_size: 16\nwidth: 4\nbatch_size: 12\nlabels_file: ignored.csv\n")
    code, out = run_here("fiqa", "train", root, "--labels", tmp_path / "labels.csv", "--recognizer", "none",
                         "--out", tmp_path / "runs", "--config", tmp_path / "c.yaml", "--device", "cpu",
                         "--set", "train.epochs=0", "--set", "train.max_steps=2", "--set", "train.log_every=1")
    assert code == 0, out
    assert "steps 2" in out
    (run,) = (tmp_path / "runs" / "sdd_fiqa").iterdir()
    saved = (run / "config.yaml").read_text()
    assert f"labels_file: {tmp_path / 'labels.csv'}" in saved  # --labels beats --config
    assert "max_steps: 2" in saved and "width: 4" in saved  # --set and --config kept
    checkpoint = next((run / "checkpoints").glob("step_*.pt"))
    images = [str(p) for p in sorted((root / "member 00").iterdir())[:3]]
    code, out = run_here("fiqa", "score", *images, "--model", checkpoint, "--out", tmp_path / "s.csv")
    assert code == 0, out
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "path,score" and len(rows) == 4 and all(np.isfinite(float(r.split(",")[1])) for r in rows[1:])
    code, out = run_here("fiqa", "train", "--resume", run, "--labels", tmp_path / "other.csv", "--device", "cpu")
    assert code == 2 and "--force" in out
    (run / "config.yaml").write_text(saved.replace("width: 4", "width: 8"))
    code, out = run_here("fiqa", "score", *images, "--model", checkpoint)
    assert code == 2 and "does not fit" in out


def test_train_needs_a_trunk_source_and_a_fitting_recogniser(folder, tmp_path) -> None:
    from lowlabel.methods.sdd_fiqa.extractors import save_recognizer
    from lowlabel.methods.sdd_fiqa.model import FaceEmbedder

    root = folder(4, 9)
    (tmp_path / "l.csv").write_text("path,identity,quality\nmember 00/frame_0.png,0,50\n")
    common = [root, "--labels", tmp_path / "l.csv", "--out", tmp_path / "runs", "--device", "cpu"]
    code, out = run_here("fiqa", "train", *common)
    assert code == 2 and "init_from" in out and not (tmp_path / "runs").exists()
    save_recognizer(FaceEmbedder(width=8, image_size=16), tmp_path / "wide.pt")
    code, out = run_here("fiqa", "train", *common, "--recognizer", tmp_path / "wide.pt", "--set", "width=4",
                         "--set", "image_size=16", "--set", "batch_size=1", "--set", "train.max_steps=1")
    assert code == 2 and "wide.pt" in out and "does not fit" in out
    assert not list((tmp_path / "runs").rglob("run.json"))  # the failed run left no folder behind
