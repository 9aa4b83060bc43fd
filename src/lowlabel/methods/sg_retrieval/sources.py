"""The two data sources of IRSGS training and evaluation: a user's files in the official formats (a folder with the
conventional names, or a manifest naming files of any name) and the shapes world."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval import data as readers
from lowlabel.methods.sg_retrieval.graphs import SceneGraph, shapes_graph
from lowlabel.methods.sg_retrieval.losses import caption_relevance
from lowlabel.nn import text


@dataclass(frozen=True)
class DataFiles:
    """Where each official file of a dataset is; only `graphs` and one of `captions` / `relevance` are required.

    graphs: VG scene_graphs.json or the official .pkl; captions: COCO or Karpathy JSON; relevance + relevance_ids:
    `<ds>_sbert_mean.npy` + `<ds>_sbert_img_id.npy`; split: {image_id: "train" | "test"}; resnet_features: the
    official ResNet-152 HDF5 (first-stage candidate pools); triplets + ratings: the human judgements
    (triplets.csv, anon_results.csv); images: a folder holding `<image_id>.<ext>` (the retrieved-images figure).
    """

    graphs: Path
    captions: Path | None = None
    relevance: Path | None = None
    relevance_ids: Path | None = None
    split: Path | None = None
    resnet_features: Path | None = None
    triplets: Path | None = None
    ratings: Path | None = None
    images: Path | None = None


def _folder_files(root: Path) -> DataFiles:
    """The conventional names inside a folder (`DataFiles` fields -> scene_graphs.json or *.pkl, captions.json,
    *_sbert_mean.npy + *_sbert_img_id.npy, split.json, resnet152.h5, triplets.csv, anon_results.csv, images/)."""
    graphs = [root / "scene_graphs.json"] if (root / "scene_graphs.json").is_file() else sorted(root.glob("*.pkl"))
    if not graphs:
        raise LowlabelError(f"{root} holds no scene_graphs.json and no *.pkl graph file (or pass a manifest naming "
                            "your files: docs/methods/sg_retrieval.md)")
    relevance = sorted(root.glob("*_sbert_mean.npy"))

    def present(name: str) -> Path | None:
        return root / name if (root / name).exists() else None

    return DataFiles(
        graphs=graphs[0], captions=present("captions.json"), relevance=relevance[0] if relevance else None,
        relevance_ids=relevance[0].with_name(relevance[0].name.replace("_mean.npy", "_img_id.npy")) if relevance
        else None, split=present("split.json"), resnet_features=present("resnet152.h5"),
        triplets=present("triplets.csv"), ratings=present("anon_results.csv"), images=present("images"),
    )


def _manifest_files(manifest: Path) -> DataFiles:
    """A YAML/JSON manifest {field: path} (paths relative to the manifest's folder), fields as in `DataFiles`."""
    import yaml

    try:
        entries = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LowlabelError(f"data manifest {manifest} is unreadable or not YAML/JSON ({err})") from None
    names = [f.name for f in fields(DataFiles)]
    if not isinstance(entries, dict) or "graphs" not in entries:
        raise LowlabelError(f"data manifest {manifest} must be a mapping with at least 'graphs' (keys: "
                            f"{', '.join(names)})")
    unknown = sorted(set(map(str, entries)) - set(names))
    if unknown:
        raise LowlabelError(f"data manifest {manifest}: unknown keys {', '.join(unknown)} (known: {', '.join(names)})")
    paths = {}
    for key, value in entries.items():
        if not isinstance(value, str) or not value:
            raise LowlabelError(f"data manifest {manifest}: '{key}' must be a path")
        paths[key] = manifest.parent / value
        if not paths[key].exists():
            raise LowlabelError(f"data manifest {manifest}: {key} file {paths[key]} does not exist")
    return DataFiles(**paths)


def data_files(path: str | Path) -> DataFiles:
    """The files of `--data`: a folder with the conventional names or a manifest (.yaml/.yml/.json) naming them."""
    path = Path(path)
    if path.is_dir():
        return _folder_files(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        return _manifest_files(path)
    raise LowlabelError(f"--data {path} is neither a folder nor a .yaml/.json manifest of the dataset's files")


@dataclass
class RetrievalData:
    """Graphs, their (N, N) surrogate relevance and train/test index tensors, plus what evaluation may use:
    first-stage features (N, D) aligned with the graphs (official: ResNet-152; pools of its top-100), human triplets
    (T, 3) of graph indices with their (T, 4) votes, an image folder, or the shapes-world scenes."""

    graphs: list[SceneGraph]
    relevance: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    encoder: str
    scenes: list | None = None
    first_stage: torch.Tensor | None = None
    triplets: torch.Tensor | None = None
    votes: torch.Tensor | None = None
    images: Path | None = None

    @property
    def ids(self) -> list[str]:
        return [g.image_id for g in self.graphs]


def _split(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices: the last `test_fraction` of the n images (at least one) are the test split."""
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 2:
        raise LowlabelError(f"{n} images are too few to split off {n_test} test images; add data")
    return torch.arange(n - n_test), torch.arange(n - n_test, n)


def shapes_data(n_scenes: int, *, captions_per_image: int = 5, encoder: str = "minilm", test_fraction: float = 0.2,
                seed: int = 0) -> RetrievalData:
    """Shapes-world scenes: ground-truth scene graphs, `captions_per_image` templated captions each, relevance from
    the sentence `encoder` (minilm | tfidf); the last `test_fraction` of the scenes are the test split."""
    from lowlabel.data.synth.shapes import ShapesConfig, ShapesDataset

    world = ShapesDataset(n_scenes, seed=seed, cfg=ShapesConfig(n_captions=captions_per_image))
    scenes = [world.scene(i) for i in range(n_scenes)]
    graphs = [shapes_graph(s.scene_graph(), str(i)) for i, s in enumerate(scenes)]
    texts = [c for s in scenes for c in s.captions]
    owner = torch.arange(len(scenes)).repeat_interleave(torch.tensor([len(s.captions) for s in scenes]))
    emb = text.sentence_encoder(encoder).encode(texts)
    rel = caption_relevance(emb, owner, n_images=len(scenes), captions_per_image=captions_per_image)
    train, test = _split(len(scenes), test_fraction)
    return RetrievalData(graphs, rel, train, test, encoder, scenes)


def _aligned(ids: list[str], source_ids: list[str], source: Path) -> torch.Tensor:
    """(N,) row of each id in a file's id list; ids the file lacks are an error naming it."""
    where = {r: i for i, r in enumerate(source_ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise LowlabelError(f"{source} has no row for images {', '.join(missing[:5])}"
                            f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
    return torch.tensor([where[i] for i in ids], dtype=torch.long)


def _relevance(files: DataFiles, ids: list[str], encoder: str, captions_per_image: int) -> tuple[torch.Tensor, str]:
    if files.relevance is not None:
        if files.relevance_ids is None:
            raise LowlabelError(f"{files.relevance} needs its id file (relevance_ids, <ds>_sbert_img_id.npy)")
        rel_all, rel_ids = readers.read_relevance(files.relevance, files.relevance_ids)
        pos = _aligned(ids, rel_ids, files.relevance)
        return rel_all[pos][:, pos], f"precomputed:{files.relevance.name}"
    if files.captions is None:
        raise LowlabelError(f"no captions and no relevance matrix next to {files.graphs}: one defines the training "
                            "target")
    texts, owner = readers.caption_arrays(readers.read_captions(files.captions), ids)
    emb = text.sentence_encoder(encoder).encode(texts)
    return caption_relevance(emb, owner, n_images=len(ids), captions_per_image=captions_per_image), encoder


def official_data(path: str | Path, *, captions_per_image: int = 5, encoder: str = "minilm",
                  test_fraction: float = 0.2) -> RetrievalData:
    """A user's dataset (`data_files`): graphs, the surrogate relevance (precomputed, or from the captions under the
    sentence `encoder`), the split (split.json, else the last `test_fraction` of the graphs are the test split) and
    the optional evaluation files (ResNet features, human triplets restricted to images with graphs)."""
    files = data_files(path)
    graphs = readers.read_graphs(files.graphs)
    if not graphs:
        raise LowlabelError(f"{files.graphs} holds no scene graph")
    ids = [g.image_id for g in graphs]
    if len(set(ids)) != len(ids):
        raise LowlabelError(f"{files.graphs}: image ids repeat; every graph needs its own id")
    rel, source = _relevance(files, ids, encoder, captions_per_image)
    if files.split is not None:
        split = readers.read_split(files.split)
        train = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "train"], dtype=torch.long)
        test = torch.tensor([i for i, g in enumerate(ids) if split.get(g) == "test"], dtype=torch.long)
        if len(train) < 2 or len(test) < 1:
            raise LowlabelError(f"{files.split} leaves {len(train)} train / {len(test)} test images that have graphs")
    else:
        train, test = _split(len(ids), test_fraction)
    out = RetrievalData(graphs, rel, train, test, source, images=files.images)
    if files.resnet_features is not None:
        features, feature_ids = readers.read_resnet_features(files.resnet_features)
        out.first_stage = features[_aligned(ids, feature_ids, files.resnet_features)]
    if (files.triplets is None) != (files.ratings is None):
        raise LowlabelError(f"human judgements need both triplets.csv and anon_results.csv; got only "
                            f"{files.triplets or files.ratings}")
    if files.triplets is not None and files.ratings is not None:
        triples, votes = readers.read_human_ratings(files.triplets, files.ratings)
        position = {g: i for i, g in enumerate(ids)}
        keep = [k for k, t in enumerate(triples) if all(i in position for i in t)]
        out.triplets = torch.tensor([[position[i] for i in triples[k]] for k in keep], dtype=torch.long).reshape(-1, 3)
        out.votes = votes[keep]
    return out
