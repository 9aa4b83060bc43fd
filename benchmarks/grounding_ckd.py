"""CKD hot paths: the training step's phrase encoding and the image-sentence contrastive loss.

python benchmarks/grounding_ckd.py [--quick]
- one training step (forward + backward, NCE + distillation) of the official-size model (MLPs 1024 -> 512, LSTM 300,
  384-d word vectors, R = 30, 16 phrase slots x 10 tokens) at batch 32 and 128, with COCO-like captions (1-4 phrases,
  the other slots padding): each distinct phrase encoded once (this library's step) vs every slot encoded (the
  official graph);
- nce_loss forward + backward for B = 32, 128, 512 (R = 30, P = 16, D = 512): one (B, P, B, R) einsum (this library)
  vs a loop over the B images (score one image against every sentence at a time, the obvious alternative).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure, write_results
from lowlabel.methods.grounding_ckd import losses
from lowlabel.methods.grounding_ckd.model import GroundingModel
from lowlabel.metrics.grounding import box_iou


def _batch(b: int, r: int = 30, p: int = 16, t: int = 10, vocab: int = 400, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((b, p, t), vocab, dtype=torch.long)
    for i in range(b):
        for j in range(int(torch.randint(1, 5, (), generator=g))):
            n = int(torch.randint(1, 4, (), generator=g))
            ids[i, j, :n] = torch.randint(0, 60, (n,), generator=g)  # a small noun vocabulary: phrases repeat
    table = torch.cat([torch.randn(vocab, 384, generator=g), torch.zeros(1, 384)])
    xy = torch.rand(b, r, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 20 + torch.rand(b, r, 2, generator=g) * 200], -1)
    classes = torch.where(ids[..., 0] < vocab, torch.randint(0, 80, (b, p), generator=g), -1)
    return {"feats": torch.randn(b, r, 2048, generator=g), "ids": ids, "table": table,
            "ious": torch.stack([box_iou(x, x) for x in boxes]), "scores": torch.rand(b, r, 80, generator=g),
            "classes": classes}


def _step(model: GroundingModel, d: dict, dedupe: bool) -> None:
    known = d["table"].abs().sum(1) > 0
    ids = d["ids"]
    if dedupe:
        unique, inverse = torch.unique(ids.reshape(-1, ids.shape[-1]), dim=0, return_inverse=True)
        region, phrase, _ = model(d["feats"], d["table"][unique][None], known[unique][None])
        phrase = phrase[0, inverse].view(*ids.shape[:2], -1)
    else:
        region, phrase, _ = model(d["feats"], d["table"][ids], known[ids])
    mask = known[ids].any(-1)
    cls = torch.where(mask, d["classes"], -1)
    teacher = d["scores"].gather(2, cls.clamp_min(0)[:, None].expand(-1, d["scores"].shape[1], -1)).transpose(1, 2)
    teacher = teacher * (cls >= 0)[..., None]
    loss = losses.nce_loss(region, phrase, mask) + 3.0 * losses.distillation_loss(
        region, phrase, mask, teacher, d["ious"], teacher_norm="scale")
    model.zero_grad(set_to_none=True)
    loss.backward()


def _nce_loop(region: torch.Tensor, phrase: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same loss with one image at a time against all sentences."""
    r, p = F.normalize(region, dim=-1), F.normalize(phrase, dim=-1)
    cols = [losses.SCORE_SCALE * ((p @ r[i].T).max(-1).values * mask).sum(-1) for i in range(len(r))]
    logits = torch.stack(cols, 1)
    return F.cross_entropy(logits, torch.arange(len(r)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat = 2 if args.quick else 5
    rows = []
    model = GroundingModel(region_dim=2048)
    for b in ([32] if args.quick else [32, 128]):
        d = _batch(b)
        distinct = len(torch.unique(d["ids"].reshape(-1, 10), dim=0))
        for name, dedupe in (("distinct phrases once", True), ("every slot (official)", False)):
            m = measure(lambda d=d, dedupe=dedupe: _step(model, d, dedupe), repeat=repeat, warmup=1)
            rows.append({"case": f"train step B={b} ({distinct} distinct of {b * 16} slots)", "variant": name,
                         "seconds": m["seconds_best"], "peak_mib": m["peak_mib"]})
    for b in ([32, 128] if args.quick else [32, 128, 512]):
        g = torch.Generator().manual_seed(1)
        region = torch.randn(b, 30, 512, generator=g, requires_grad=True)
        phrase = torch.randn(b, 16, 512, generator=g, requires_grad=True)
        mask = torch.rand(b, 16, generator=g) < 0.5
        mask[:, 0] = True
        a = losses.nce_loss(region, phrase, mask)
        assert torch.allclose(a, _nce_loop(region, phrase, mask), atol=1e-5)
        for name, fn in (("one einsum", losses.nce_loss), ("loop over images", _nce_loop)):
            m = measure(lambda fn=fn, x=(region, phrase, mask): fn(*x).backward(), repeat=repeat, warmup=1)
            rows.append({"case": f"nce_loss fwd+bwd B={b}", "variant": name, "seconds": m["seconds_best"],
                         "peak_mib": m["peak_mib"]})
    write_results("grounding_ckd", rows, notes="1 torch thread, best of the repeats; shared 2-core machine")


if __name__ == "__main__":
    main()
