"""CKD recipe: official defaults, training through the engine (NCE, plus distillation from the detector's class
scores), evaluation (Recall@1/5/10 at IoU > 0.5), the detector-alone and random references, a smoke case.

Total loss (spec "Losses" 3): L = L_nce + lambda(step) L_dis with lambda(step) = min(0.001 + floor(step / 500), 3).
Data: a folder with train.npz and val.npz (or test.npz) in the features format of `features.py`, or None for the
shapes world (`shapes_world.py`). The detector's scores are read only by the training step and by the
detector-alone reference; `ground` (the test-time path) never touches them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowlabel.engine.batches import TensorBatches
from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.grounding_ckd import losses
from lowlabel.methods.grounding_ckd.data import MAX_PHRASES, MAX_TOKENS, phrase_token_ids
from lowlabel.methods.grounding_ckd.detections import teacher_scores
from lowlabel.methods.grounding_ckd.features import GroundingSet, read_split
from lowlabel.methods.grounding_ckd.model import GroundingModel
from lowlabel.methods.grounding_ckd.shapes_world import WorldConfig, build_world
from lowlabel.metrics.grounding import OFFICIAL_OFFSET, OFFICIAL_THRESHOLD, box_iou, paired_iou

KS = (1, 5, 10)


@dataclass
class Config:
    """Official defaults of `train_nce_distill_model.py` (spec "Architecture", "Losses", "Training procedure");
    region_dim and the feature mean/std come from the data (training writes them here, as the official table)."""

    region_dim: int = 0  # 0 = from the data
    token_dim: int = 384  # width of the word vectors of `embedder`
    embedder: str = "minilm"  # word vectors: minilm | glove:PATH (official: GloVe 300-d) | random:DIM
    lstm_dim: int = 300
    hidden_dim: int = 1024
    embed_dim: int = 512
    feature_mean: float = 0.0  # scalar standardisation of region features; set from the training data
    feature_std: float = 1.0
    max_phrases: int = MAX_PHRASES
    max_tokens: int = MAX_TOKENS
    batch_size: int = 32
    distill: bool = True  # False = NCE alone (the ablation)
    neighbours: int = 8  # K of the candidate set
    teacher_norm: str = "scale"  # "scale" t/2 (official for COCO detectors) | "shift" t - mean (Open Images)
    ramp_block: int = 500  # lambda = min(0.001 + floor(step / ramp_block), ramp_cap)
    ramp_cap: float = 3.0
    world: WorldConfig = field(default_factory=WorldConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, log_every=50, checkpoint_every=500))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-4, schedule="constant"))


def check(cfg: Config) -> None:
    """Errors for settings that cannot run, before any run folder is made."""
    if cfg.teacher_norm not in losses.TEACHER_NORMS:
        raise LowlabelError(f"teacher_norm='{cfg.teacher_norm}': use 'scale' (COCO detector) or 'shift' (softmax "
                            "over background and classes)")
    if cfg.batch_size < 2:
        raise LowlabelError(f"batch_size={cfg.batch_size}: the contrastive loss needs at least 2 pairs per batch "
                            "(official 32)")
    if cfg.neighbours < 1 or cfg.max_phrases < 1 or cfg.max_tokens < 1:
        raise LowlabelError(f"neighbours={cfg.neighbours}, max_phrases={cfg.max_phrases}, max_tokens="
                            f"{cfg.max_tokens}: each must be at least 1")


def build_model(cfg: Config) -> GroundingModel:
    """The two-branch grounding model of `cfg` (region_dim must be set: from the data, or by hand)."""
    if cfg.region_dim <= 0:
        raise LowlabelError("region_dim=0: train on data first (it sets region_dim) or --set region_dim=...")
    return GroundingModel(region_dim=cfg.region_dim, token_dim=cfg.token_dim, lstm_dim=cfg.lstm_dim,
                          hidden_dim=cfg.hidden_dim, embed_dim=cfg.embed_dim, feature_mean=cfg.feature_mean,
                          feature_std=cfg.feature_std)


def load_data(cfg: Config, data: Path | None) -> tuple[GroundingSet, GroundingSet]:
    """(train, evaluation) sets: `data`/train.npz and val.npz (test.npz if there is no val.npz), or the shapes world."""
    if data is None:
        return build_world(cfg.world)
    data = Path(data)
    split = "val" if not data.is_dir() or (data / "val.npz").is_file() else "test"
    return read_split(data, "train"), read_split(data, split)


def fit_to_data(cfg: Config, train_set: GroundingSet) -> Config:
    """`cfg` with region_dim and the scalar feature mean/std of the training proposals (official: one table entry
    per dataset and backbone), unless region_dim is already set."""
    if cfg.region_dim > 0:
        if cfg.region_dim != train_set.feature_dim:
            raise LowlabelError(f"region_dim={cfg.region_dim} but the data's features are {train_set.feature_dim}-d")
        return cfg
    real = train_set.features[train_set.region_mask]
    return dataclasses.replace(cfg, region_dim=train_set.feature_dim, feature_mean=float(real.mean()),
                               feature_std=float(real.std()) or 1.0)


@dataclass
class Phrases:
    """Per sentence: word ids (S, P, T) into `table` (V + 1, Dt), class (S, P) (-1 none or padding), and the index of
    each slot's phrase in the set's phrase arrays (S, P) (-1 padding). The first max_phrases phrases are kept."""

    ids: torch.Tensor
    table: torch.Tensor
    classes: torch.Tensor
    slots: torch.Tensor


def phrase_arrays(cfg: Config, data: GroundingSet) -> Phrases:
    """Tokenise every sentence's phrases with cfg.embedder (the phrase encoder's inputs)."""
    from lowlabel.nn.text import label_embedder

    per_sentence = [q[: cfg.max_phrases] for q in data.phrases_of()]
    ids, table = phrase_token_ids([[data.phrase_text[q] for q in qs] for qs in per_sentence],
                                  label_embedder(cfg.embedder), max_phrases=cfg.max_phrases, max_tokens=cfg.max_tokens)
    if table.shape[1] != cfg.token_dim:
        raise LowlabelError(f"token_dim={cfg.token_dim} but embedder '{cfg.embedder}' gives {table.shape[1]}-d words")
    slots = torch.full(ids.shape[:2], -1, dtype=torch.long)
    for s, qs in enumerate(per_sentence):
        slots[s, : len(qs)] = torch.as_tensor(qs, dtype=torch.long)
    classes = torch.where(slots >= 0, torch.from_numpy(data.phrase_class)[slots.clamp_min(0)], -1)
    return Phrases(ids, table, classes, slots)


class Regions:
    """The images' proposals on the device: features (N, R, D), boxes, region_mask, teacher scores, IoUs (N, R, R)."""

    def __init__(self, data: GroundingSet, device: torch.device | str = "cpu") -> None:
        self.features, self.boxes, self.mask, self.scores = (t.to(device) for t in data.tensors())
        self.ious = torch.stack([box_iou(b, b) for b in self.boxes])


def make_step_fn(cfg: Config, regions: Regions, table: torch.Tensor) -> Any:
    """step_fn(model, (sentence_image (B,), word ids (B, P, T), classes (B, P)), step) -> {"nce", "distill"}: the
    sentences of a batch against their images (spec Loss 1), and the distillation term (Loss 2) weighted by the
    official ramp (Loss 3; weight included in the returned value)."""
    known = known_words(table)

    def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
        image, ids, classes = batch
        feats, mask = regions.features[image], regions.mask[image]
        # each distinct phrase is encoded once (same values and gradients as encoding every slot)
        unique, inverse = torch.unique(ids.reshape(-1, ids.shape[-1]), dim=0, return_inverse=True)
        region, phrase, _ = model(feats, table[unique][None], known[unique][None])
        phrase = phrase[0, inverse].view(*ids.shape[:2], -1)
        phrase_mask = known[ids].any(-1)
        out = {"nce": losses.nce_loss(region, phrase, phrase_mask, region_mask=mask)}
        if cfg.distill:
            teacher = teacher_scores(regions.scores[image], torch.where(phrase_mask, classes, -1))
            weight = losses.distillation_weight(step, block=cfg.ramp_block, cap=cfg.ramp_cap)
            out["distill"] = weight * losses.distillation_loss(
                region, phrase, phrase_mask, teacher, regions.ious[image], cfg.neighbours,
                teacher_norm=cfg.teacher_norm, region_mask=mask)
        return out

    return step_fn


def batches(cfg: Config, data: GroundingSet, phrases: Phrases, runtime: Runtime) -> TensorBatches:
    """Sentences reshuffled per epoch by (seed, epoch), batches of cfg.batch_size, the last partial one dropped
    (official steps per epoch = pairs // 32)."""
    image = torch.from_numpy(data.sentence_image)
    return TensorBatches([image, phrases.ids, phrases.classes], cfg.batch_size, runtime, seed=cfg.train.seed,
                         drop_last=True)


@torch.no_grad()
def ground(model: GroundingModel, data: GroundingSet, phrases: Phrases, *, chunk: int = 64) -> torch.Tensor:
    """Test-time grounding: cosine scores (S, P, R) of every phrase slot with its image's proposals, from region
    features and phrases only (no detector scores; padding proposals at -inf)."""
    device = next(model.parameters()).device
    feats = torch.from_numpy(data.features).to(device)
    mask = torch.from_numpy(data.region_mask).to(device)
    image = torch.from_numpy(data.sentence_image).to(device)
    table = phrases.table.to(device)
    known = known_words(table)
    out = []
    model.eval()
    for s in torch.arange(len(image), device=device).split(chunk):
        ids = phrases.ids[s.cpu()].to(device)
        _, scores = model.ground(feats[image[s]], table[ids], known[ids], mask[image[s]])
        out.append(scores.cpu())
    return torch.cat(out)


def known_words(table: torch.Tensor) -> torch.Tensor:
    """(V + 1,) bool: rows of the word table with a vector (unknown words and padding are zero rows, masked)."""
    return table.abs().sum(dim=1) > 0


def correct_proposals(data: GroundingSet, phrases: Phrases) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sentence, slot) indices (n,), (n,) of the phrase slots with a ground-truth box, and which proposals are correct
    for each (n, R): IoU > 0.5 (strict, official width convention) with at least one of its boxes, real proposals
    only."""
    slot = phrases.slots
    has_gt = torch.from_numpy(data.gt_mask).any(1)
    valid = (slot >= 0) & has_gt[slot.clamp_min(0)]
    s_idx, p_idx = valid.nonzero(as_tuple=True)
    q = slot[s_idx, p_idx]
    img = torch.from_numpy(data.sentence_image)[s_idx]
    props = torch.from_numpy(data.boxes)[img].double()  # (n, R, 4)
    gt = torch.from_numpy(data.gt_boxes)[q].double()  # (n, G, 4)
    n, r, g = len(q), props.shape[1], gt.shape[1]
    iou = paired_iou(gt[:, :, None].expand(n, g, r, 4).reshape(-1, 4),
                     props[:, None].expand(n, g, r, 4).reshape(-1, 4), offset=OFFICIAL_OFFSET).view(n, g, r)
    gmask = torch.from_numpy(data.gt_mask)[q]
    correct = ((iou > OFFICIAL_THRESHOLD) & gmask[:, :, None]).any(1) & torch.from_numpy(data.region_mask)[img]
    return s_idx, p_idx, correct


def hits(scores: torch.Tensor, data: GroundingSet, phrases: Phrases, ks: tuple[int, ...] = KS) -> torch.Tensor:
    """Per evaluated phrase and k: is one of its k best proposals correct (`correct_proposals`)? scores (S, P, R) ->
    (n, len(ks)) bool, the official Recall@k counts; ties go to the lower index."""
    s_idx, p_idx, correct = correct_proposals(data, phrases)
    r = correct.shape[1]
    order = torch.sort(scores[s_idx, p_idx], dim=1, descending=True, stable=True).indices
    first = torch.cummax(correct.gather(1, order).int(), dim=1).values
    return first[:, [min(k, r) - 1 for k in ks]].bool()


def recall(hit: torch.Tensor, ks: tuple[int, ...] = KS, prefix: str = "") -> dict[str, float]:
    """{"R@k": fraction of evaluated phrases hit at k}."""
    if len(hit) == 0:
        raise LowlabelError("no phrase with a ground-truth box to evaluate")
    return {f"{prefix}R@{k}": float(hit[:, j].double().mean()) for j, k in enumerate(ks)}


def references(data: GroundingSet, phrases: Phrases) -> dict[str, float]:
    """The detector alone (each phrase -> the proposal with the highest score of the phrase's class; a phrase without
    a class -> the first proposal), the expected accuracy of a uniformly random proposal, and the proposals' upper
    bound (any proposal correct); all over the evaluated phrases."""
    scores = torch.from_numpy(data.scores)[torch.from_numpy(data.sentence_image)]  # (S, R, C)
    cls = phrases.classes
    det = teacher_scores(scores, cls) if scores.shape[-1] else torch.zeros(*cls.shape, data.num_regions)
    mask = torch.from_numpy(data.region_mask)[torch.from_numpy(data.sentence_image)][:, None]
    det = det.masked_fill(~mask, float("-inf"))
    s_idx, _, correct = correct_proposals(data, phrases)
    real = torch.from_numpy(data.region_mask)[torch.from_numpy(data.sentence_image)[s_idx]].sum(-1)
    return {"detector R@1": float(hits(det, data, phrases, (1,)).double().mean()),
            "random R@1": float((correct.sum(-1) / real).double().mean()),
            "upper bound": float(correct.any(-1).double().mean())}


def evaluate_phrases(data: GroundingSet, cfg: Config) -> int:
    """How many phrase slots of `data` are evaluated (kept within max_phrases and with a ground-truth box)."""
    return len(correct_proposals(data, phrase_arrays(cfg, data))[0])


def evaluate_set(model: GroundingModel, data: GroundingSet, cfg: Config) -> dict[str, float]:
    """Recall@1/5/10 of `model` on `data` (plus the phrase count)."""
    phrases = phrase_arrays(cfg, data)
    hit = hits(ground(model, data, phrases), data, phrases)
    return {**recall(hit), "phrases": float(len(hit))}


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Train CKD (or NCE alone when distill is False), then evaluate the last step on the evaluation split;
    summary.json gets R@1/5/10, the references and the config's data-derived fields."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool,
                sets: tuple[GroundingSet, GroundingSet] | None = None) -> tuple[GroundingModel, dict]:
    """`train`, returning the model as well; `sets` gives (train, eval) sets already loaded (the demo's seeds)."""
    check(cfg)
    train_set, eval_set = sets if sets is not None else load_data(cfg, data)
    cfg = fit_to_data(cfg, train_set)
    phrases = phrase_arrays(cfg, train_set)
    regions = Regions(train_set, runtime.device)
    with seeded(cfg.train.seed):
        model = build_model(cfg)
    trainer = Trainer(model, make_step_fn(cfg, regions, phrases.table.to(runtime.device)), config=cfg.train,
                      optim=cfg.optim, runtime=runtime, run_dir=run_dir)
    summary = trainer.fit(batches(cfg, train_set, phrases, runtime), resume=resume)
    model = unwrap(trainer.model)
    summary.update({"test": evaluate_set(model, eval_set, cfg),
                    "references": references(eval_set, phrase_arrays(cfg, eval_set)),
                    "region_dim": cfg.region_dim, "feature_mean": cfg.feature_mean, "feature_std": cfg.feature_std})
    if runtime.is_main:
        write_json(Path(run_dir) / "summary.json", summary)
    return model, summary


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """R@1/5/10 of a checkpoint on the evaluation split (cfg as saved by training: region_dim and feature stats)."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    return evaluate_set(model, load_data(cfg, data)[1], cfg)


def smoke_case(runtime: Runtime) -> SmokeCase:
    """A narrow model on 6 random images of 5 proposals and 4 sentences (random word vectors); both terms active
    (ramp block 1). No frozen parameters: the detector is data, not part of the model."""
    gen = np.random.default_rng(0)
    n, r = 6, 5
    xy = gen.uniform(0, 40, (n, r, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + gen.uniform(5, 20, (n, r, 2)).astype(np.float32)], -1)
    scores = gen.uniform(0, 1, (n, r, 3)).astype(np.float32)
    words = ["red circle", "blue square", "a star"]
    q = np.arange(2 * n)
    data = GroundingSet([f"i{i}" for i in range(n)], gen.normal(size=(n, r, 8)).astype(np.float32), boxes,
                        np.ones((n, r), bool), scores, ["a", "b", "c"], np.arange(n), ["s"] * n, q // 2,
                        [words[i % 3] for i in q], np.where(q % 3 == 2, -1, q % 3), boxes[q // 2, :1],
                        np.ones((2 * n, 1), bool))
    cfg = Config(embedder="random:16", token_dim=16, lstm_dim=8, hidden_dim=16, embed_dim=8, batch_size=4,
                 ramp_block=1)
    cfg = fit_to_data(cfg, data)
    phrases = phrase_arrays(cfg, data)
    step_fn = make_step_fn(cfg, Regions(data, runtime.device), phrases.table.to(runtime.device))
    batch = (torch.arange(4), phrases.ids[:4], phrases.classes[:4])
    with seeded(0):
        model = build_model(cfg)
    return SmokeCase(model=model.to(runtime.device), step_fn=lambda m, b, s: step_fn(m, b, s + 1), batch=batch)
