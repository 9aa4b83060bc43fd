"""SOHO recipe: the released pre-training configuration, pre-training through the engine, ITM retrieval evaluation.

Pre-training loss (spec "Losses", all weights 1): L = L_mlm + L_mvm + mean(L_itm). Per step: ITM negatives are
drawn first (a caption of another image of the batch replaces the pair's caption with probability 0.5), then the
text is MLM-masked (15%, 80/10/10), then the neck masks one visual word per row with probability 0.015 (MVM).
Every draw of step t comes from a generator seeded by (train.seed, rank, t), so a resumed run repeats them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lowlabel.engine.demo import SmokeCase
from lowlabel.engine.recipe import OptimConfig, TrainConfig, load_model
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer, unwrap
from lowlabel.errors import LowlabelError
from lowlabel.files import write_json
from lowlabel.methods.soho import losses
from lowlabel.methods.soho.data import (
    WORDPIECE_SPECIAL,
    WORDPIECE_VOCAB,
    PairBatches,
    PairCorpus,
    WordPieceTokenizer,
    build_corpus,
    load_image,
    prepare_image,
    read_pairs,
)
from lowlabel.methods.soho.masking import itm_negatives, mlm_mask, token_overlap
from lowlabel.methods.soho.model import SOHO, minilm_state, mobilenet_frozen, resnet_backbone, resnet_frozen
from lowlabel.methods.soho.retrieval import retrieval_recalls, score_pairs
from lowlabel.methods.soho.world import world_config, world_split
from lowlabel.nn.quantize import code_usage, constant_decay, ramped_decay

OFFICIAL_EPOCHS = 40
SPECIAL_IDS = tuple(WORDPIECE_SPECIAL.values())


@dataclass
class ModelConfig:
    """Architecture (spec "Architecture"; released `soho_res18_pre.py`)."""

    backbone: str = "resnet18"  # resnet18 | resnet50 | mobilenet_v2
    width: int = 64  # ResNet base width (64 = torchvision)
    small_stem: bool = False  # ResNet 3x3/1 stem without max-pool (C5 at stride 8), for small images
    # "" random init; "imagenet": the offline MobileNetV2 ImageNet weights; else a torchvision-key state file
    # (official: torchvision ImageNet ResNet-18, not shipped offline here)
    backbone_weights: str = ""
    frozen_stages: int = 1  # stem + layer1 (MobileNetV2: blocks up to stride 4)
    hidden: int = 768
    layers: int = 3
    heads: int = 12
    ffn: int = 3072
    dropout: float = 0.1
    text_init: str = ""  # "" random (N(0, 0.02)); "minilm": all-MiniLM-L6-v2 (hidden 384, 12 heads, ffn 1536); a path
    num_codes: int = 2048
    decay: float = 0.4
    decay_schedule: str = "constant"  # constant (released code) | ramp (min(0.4 * step, max_decay), paper gamma)
    max_decay: float = 0.99
    use_dictionary: bool = True  # False: the ablation without the Visual Dictionary (and without MVM)
    mask_prob: float = 0.015
    pool: bool = True  # 2x2 max-pool on C5 (tokens at stride 64)


@dataclass
class DataConfig:
    """Batching and the pre-training tasks' input corruption (spec "Training procedure", "Losses")."""

    images_per_batch: int = 16  # per process (official 16 per GPU, 8 GPUs)
    sentence_group: int = 4  # captions per image in a batch
    max_length: int = 16  # WordPiece tokens incl. [CLS]/[SEP]
    scale: list[int] = field(default_factory=lambda: [1000, 600])  # keep-ratio resize into (long, short)
    size_divisor: int = 32
    mlm_prob: float = 0.15
    itm_prob: float = 0.5
    itm_hard_temperature: float = 0.0  # 0: uniform negatives (official); T > 0: softmax(token overlap / T)
    image_dir: str = ""  # COCO JSON images folder ("" = the official layout next to annotations/)


@dataclass
class WorldConfig:
    """The shapes world used when no data file is given (lowlabel.data.synth.shapes, docs/data/shapes.md)."""

    n_train: int = 2000
    n_test: int = 100
    size: int = 64
    max_objects: int = 3
    seed: int = 0


@dataclass
class Config:
    """Official pre-training defaults: `AdamwSGD`, i.e. AdamW 1e-4, eps 1e-6, wd 0.01 on everything but the backbone,
    plain SGD at 100 x that lr (1e-2), momentum 0.9, wd 1e-4 on the backbone; lr x0.1 at epochs 25 and 35 of 40;
    1,000 warm-up steps; clip 10. Deviations (docs/methods/soho.md): no gradient accumulation; warm-up from 0
    (official from 1/3)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    backbone_optimizer: str = "sgd"  # sgd (official) | adamw | adam
    backbone_lr_mult: float = 100.0  # backbone lr = optim.lr x this
    backbone_momentum: float = 0.9  # sgd only
    backbone_weight_decay: float = 1e-4
    eval_captions: int = 0  # retrieval: the first k captions of each image (0 = all)
    eval_batch: int = 256  # image-caption pairs per forward pass in retrieval
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=OFFICIAL_EPOCHS, log_every=50, checkpoint_every=1000, grad_clip=10.0, seed=0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adamw", lr=1e-4, betas=[0.9, 0.999], eps=1e-6, weight_decay=0.01, schedule="step",
        milestones=[25 / OFFICIAL_EPOCHS, 35 / OFFICIAL_EPOCHS], gamma=0.1, warmup_steps=1000))


def decay_at(cfg: ModelConfig, step: int) -> float:
    """The dictionary decay at optimiser step `step` (0-based): constant or the official ramp (from step 1)."""
    if cfg.decay_schedule == "constant":
        return constant_decay(step, cfg.decay)
    if cfg.decay_schedule == "ramp":
        return ramped_decay(step + 1, cfg.decay, cfg.max_decay)
    raise LowlabelError(f"model.decay_schedule='{cfg.decay_schedule}': use constant or ramp")


def _backbone(cfg: ModelConfig) -> tuple[torch.nn.Module, int, tuple[str, ...]]:
    if cfg.backbone == "mobilenet_v2":
        from lowlabel.nn.mobilenet import MobileNetV2, load_imagenet_weights

        net = MobileNetV2(num_classes=0)
        if cfg.backbone_weights:
            load_imagenet_weights(net, None if cfg.backbone_weights == "imagenet" else cfg.backbone_weights)
        return net, net.feature_dim, mobilenet_frozen(cfg.frozen_stages)
    net = resnet_backbone(cfg.backbone, width=cfg.width, small_stem=cfg.small_stem)
    if cfg.backbone_weights == "imagenet":
        raise LowlabelError("model.backbone_weights=imagenet: offline ImageNet weights exist for mobilenet_v2 only; "
                            "give a torchvision ResNet state file path instead")
    if cfg.backbone_weights:
        from lowlabel.nn.mobilenet import read_state_file

        state = {k: v for k, v in read_state_file(cfg.backbone_weights).items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise LowlabelError(f"{cfg.backbone_weights} does not fit {cfg.backbone}: missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]}")
    return net, net.feature_dim, resnet_frozen(cfg.frozen_stages)


def build_encoder(cfg: Config, *, use_dictionary: bool | None = None, seed: int | None = None) -> SOHO:
    """The SOHO network of `cfg` (weights from a generator forked from seed `train.seed`; the global torch stream is
    left as it was). `use_dictionary` overrides the config (the VQA model has no dictionary, officially)."""
    m = cfg.model
    with seeded(cfg.train.seed if seed is None else seed):
        backbone, channels, frozen = _backbone(m)
        model = SOHO(backbone=backbone, backbone_channels=channels, vocab_size=WORDPIECE_VOCAB, frozen=frozen,
                     hidden=m.hidden, layers=m.layers, heads=m.heads, ffn=m.ffn, num_codes=m.num_codes,
                     decay=m.decay, mask_prob=m.mask_prob,
                     use_dictionary=m.use_dictionary if use_dictionary is None else use_dictionary, pool=m.pool,
                     dropout=m.dropout, pad_id=WORDPIECE_SPECIAL["pad"], max_positions=512)
    if m.text_init:
        model.load_state_dict(minilm_state(model, None if m.text_init == "minilm" else m.text_init), strict=False)
    return model


def build_model(cfg: Config) -> torch.nn.Module:
    """The pre-training model of `cfg` (a SOHO)."""
    return build_encoder(cfg)


def param_groups(model: SOHO, cfg: Config) -> list[dict[str, Any]]:
    """Two groups, as the official `AdamwSGD`: the backbone with its own optimiser (`backbone_optimizer`, lr
    optim.lr x backbone_lr_mult, momentum, wd backbone_weight_decay) and the rest with `optim`; one schedule."""
    back = [p for p in model.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in back}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    own = dataclasses.replace(cfg.optim, name=cfg.backbone_optimizer, lr=cfg.optim.lr * cfg.backbone_lr_mult,
                              momentum=cfg.backbone_momentum, nesterov=False, weight_decay=cfg.backbone_weight_decay)
    return [{"params": back, "optim": own}, {"params": rest}]


TASKS = ("mlm", "mvm", "itm")


def make_step_fn(cfg: Config, rank: int = 0, tasks: tuple[str, ...] = TASKS) -> Any:
    """step_fn(model, batch, step) -> ({mlm, itm[, mvm]}, dictionary indices) for PairBatches batches; `tasks`
    drops pre-training tasks (retrieval fine-tuning: ("itm",))."""
    unknown = set(tasks) - set(TASKS)
    if unknown or "itm" not in tasks:
        raise LowlabelError(f"tasks {tasks}: choose among {TASKS}, itm included")

    def step_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[dict, Any]:
        inner = unwrap(model)
        if inner.neck.dictionary is not None:
            inner.neck.dictionary.decay = decay_at(cfg.model, step)
        gen = torch.Generator().manual_seed((cfg.train.seed * 1009 + rank) * 1_000_003 + step)
        ids, attention, owner = batch["input_ids"], batch["attention"], batch["caption_image"]
        scores = None
        if cfg.data.itm_hard_temperature > 0:
            scores = token_overlap(ids, SPECIAL_IDS) / cfg.data.itm_hard_temperature
        partner, itm_labels = itm_negatives(owner, owner, generator=gen, prob=cfg.data.itm_prob, scores=scores)
        swap = partner >= 0
        take = torch.where(swap, partner, torch.arange(len(partner), device=partner.device))
        ids, attention = ids[take], attention[take]
        mlm_labels = None
        if "mlm" in tasks:
            ids, mlm_labels = mlm_mask(ids, special_ids=SPECIAL_IDS, mask_id=WORDPIECE_SPECIAL["mask"],
                                       vocab_size=WORDPIECE_VOCAB, generator=gen, prob=cfg.data.mlm_prob)
        mvm = "mvm" in tasks and inner.neck.dictionary is not None
        out = model(batch["images"], ids, attention, image_index=batch["image_index"],
                    pixel_valid=batch["pixel_valid"], generator=gen, mlm_labels=mlm_labels, mvm=mvm)
        result = {"itm": losses.itm_loss(out.itm_logits, itm_labels).mean()}
        if mlm_labels is not None:
            result["mlm"] = losses.mlm_loss(out.mlm_logits, mlm_labels[mlm_labels != losses.IGNORE])
        if mvm:
            chosen = out.mvm_labels != losses.IGNORE
            result["mvm"] = losses.mvm_loss(out.visual[chosen], inner.neck.dictionary.embed, out.mvm_labels[chosen])
        return result, out.indices

    return step_fn


def usage_recorder(run_dir: Path | None, num_codes: int, every: int, rank: int = 0) -> Any:
    """after_step hook: every `every` steps append {step, codes_used, perplexity, codes_alive} of the batch's
    dictionary indices to run_dir/dictionary.jsonl (codes_alive: codes whose vector is not zero)."""

    def after_step(model: torch.nn.Module, indices: torch.Tensor | None, step: int) -> None:
        if indices is None or run_dir is None or rank != 0 or step % max(every, 1):
            return
        used, perplexity = code_usage(indices, num_codes)
        alive = int((model.neck.dictionary.embed.abs().sum(1) > 0).sum())
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "dictionary.jsonl").open("a") as fh:
            fh.write(json.dumps({"step": step, "codes_used": used, "perplexity": perplexity,
                                 "codes_alive": alive}) + "\n")

    return after_step


def read_usage(run_dir: Path) -> list[dict[str, float]]:
    """The dictionary.jsonl rows of a run, one per step (the last one written wins after a resume)."""
    path = Path(run_dir) / "dictionary.jsonl"
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


# ------------------------------------------------------------------------------------------------ data
def load_corpus(cfg: Config, data: Path | None, split: str = "train", *, tokenizer: WordPieceTokenizer | None = None
                ) -> tuple[PairCorpus, list[list[str]]]:
    """Images + caption groups from a COCO JSON / CSV file, or the shapes world's `split` (train | test).
    Returns the corpus and each image's captions (for retrieval)."""
    tok = tokenizer or WordPieceTokenizer(cfg.data.max_length)
    if data is None:
        w = cfg.world
        start, n = (0, w.n_train) if split == "train" else (w.n_train, w.n_test)
        ws = world_split(w.seed, start, n, world_config(w.size, w.max_objects, cfg.data.sentence_group))
        images = [prepare_image(im, cfg.data.scale) for im in ws.images]
        captions = ws.captions
    else:
        pairs = read_pairs(data, cfg.data.image_dir or None)
        if not pairs:
            raise LowlabelError(f"{data}: no image with a caption")
        images = [prepare_image(load_image(p.image), cfg.data.scale) for p in pairs]
        captions = [p.captions for p in pairs]
    return build_corpus(images, captions, tok, group=cfg.data.sentence_group, seed=cfg.train.seed), captions


def train(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool) -> dict:
    """Pre-train SOHO on image-caption pairs (a COCO captions JSON or CSV at `data`, or the shapes world), then, on
    the shapes world, evaluate ITM retrieval on its test split; summary.json gets the numbers."""
    return train_model(cfg, data=data, run_dir=run_dir, runtime=runtime, resume=resume)[1]


def train_model(cfg: Config, *, data: Path | None, run_dir: Path, runtime: Runtime, resume: bool,
                corpus: PairCorpus | None = None, init: SOHO | None = None, tasks: tuple[str, ...] = TASKS,
                evaluate_world: bool = True) -> tuple[SOHO, dict]:
    """`train`, returning the model with the summary; `corpus` skips reading the data again; `init` continues from
    that model's weights (fine-tuning) and `tasks` picks the losses."""
    run_dir = Path(run_dir)
    corpus = corpus or load_corpus(cfg, data, "train")[0]
    batches = PairBatches(corpus, cfg.data.images_per_batch, seed=cfg.train.seed, size_divisor=cfg.data.size_divisor,
                          rank=runtime.rank, world_size=runtime.world_size)
    model = build_model(cfg)
    if init is not None:
        model.load_state_dict(init.state_dict())
    if runtime.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trainer = Trainer(model, make_step_fn(cfg, runtime.rank, tasks), config=cfg.train, optim=cfg.optim,
                      runtime=runtime,
                      params=param_groups(model, cfg), run_dir=run_dir,
                      after_step=usage_recorder(run_dir, cfg.model.num_codes, cfg.train.log_every, runtime.rank))
    summary = trainer.fit(batches, resume=resume)
    summary["dictionary"] = read_usage(run_dir)[-1:] if cfg.model.use_dictionary else []
    if data is None and evaluate_world:
        summary["test"] = evaluate_model(model, cfg, None, runtime)
    if runtime.is_main:
        write_json(run_dir / "summary.json", summary)
    return model, summary


def evaluate_model(model: SOHO, cfg: Config, data: Path | None, runtime: Runtime,
                   test: tuple[PairCorpus, list[list[str]]] | None = None) -> dict[str, float]:
    """Image-text retrieval by the ITM match probability: TR (image -> text) and IR (text -> image) R@1/5/10 (%)
    over every image and its first `eval_captions` captions of `data` (or the world's test split)."""
    corpus, captions = test or load_corpus(cfg, data, "test")
    k = cfg.eval_captions
    texts = [c[:k] if k > 0 else c for c in captions]
    tok = WordPieceTokenizer(cfg.data.max_length)
    ids, attention = tok([t for caps in texts for t in caps])
    owner = torch.tensor([i for i, caps in enumerate(texts) for _ in caps])
    scores = score_pairs(model, corpus.images, ids, attention, batch=cfg.eval_batch, divisor=cfg.data.size_divisor,
                         device=runtime.device)
    return retrieval_recalls(scores, owner)


def evaluate(cfg: Config, *, checkpoint: Path, data: Path | None, runtime: Runtime) -> dict[str, float]:
    """Retrieval R@1/5/10 both ways of a pre-training checkpoint on `data` (or the shapes world's test split)."""
    model = load_model(build_model, cfg, checkpoint, runtime.device)
    return evaluate_model(model, cfg, data, runtime)


def tiny_config() -> Config:
    """A seconds-sized configuration (width-8 ResNet-18 with the small stem, hidden 32, 16 codes, 32x32 scenes)."""
    model = ModelConfig(width=8, small_stem=True, hidden=32, layers=1, heads=2, ffn=64, num_codes=16,
                        mask_prob=1.0)
    data = DataConfig(images_per_batch=4, sentence_group=2, max_length=24, scale=[32, 32])
    cfg = Config(model=model, data=data, world=WorldConfig(n_train=8, n_test=4, size=32), eval_batch=64)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=2, log_every=1),
                               optim=dataclasses.replace(cfg.optim, warmup_steps=0))


def smoke_case(runtime: Runtime) -> SmokeCase:
    """Tiny SOHO on one shapes-world batch (MVM on every row, so all three losses are active). The dictionary is a
    buffer; frozen: backbone stem + layer1 (no gradient)."""
    cfg = tiny_config()
    corpus, _ = load_corpus(cfg, None, "train")
    batch = next(iter(PairBatches(corpus, cfg.data.images_per_batch).epoch(0)))
    return SmokeCase(model=build_model(cfg).to(runtime.device), step_fn=make_step_fn(cfg), batch=batch,
                     frozen_prefixes=("backbone.conv1", "backbone.bn1", "backbone.layer1"))
