"""The SGP alternating loop shared by the 3D (registration) and 2D (relative pose) paths (spec "Method").

Per round (bs, 00, 01, ...): teach (or, resuming, read the round's pseudo-label files), verify, train the student
through the engine's Trainer (from scratch each round unless `finetune`), evaluate on the test pairs. A `Task`
supplies what differs between 2D and 3D; this module owns the order, the round folders
(`labels/<round>/<scene>/pseudo-label.log`, `rounds/<round>/`), resuming and the per-round record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lowlabel.engine import checkpoint as ckpt
from lowlabel.engine.batches import BatchSource
from lowlabel.engine.recipe import OptimConfig, TrainConfig
from lowlabel.engine.runtime import Runtime, seeded
from lowlabel.engine.trainer import Trainer
from lowlabel.files import write_json
from lowlabel.methods.sgp.labels import round_name


class Task(Protocol):
    """What one SGP problem gives the loop; labels are aligned with the task's training pairs (one per pair)."""

    def teach(self, model: torch.nn.Module | None, meta: int) -> list[Any]:
        """Pseudo-labels of every training pair: hand-crafted features (model None), the student's, or the truth."""

    def read_labels(self, root: Path, meta: int) -> list[Any] | None:
        """The round's labels read back from their files (pair order), or None when a file is missing."""

    def write_labels(self, root: Path, meta: int, labels: Sequence[Any]) -> None: ...

    def verified(self, label: Any) -> bool:
        """The official verifier."""

    def label_correct(self, index: int, label: Any) -> bool | None:
        """Whether the label of training pair `index` is right against the ground truth (None: no truth)."""

    def teacher_name(self, meta: int) -> str: ...

    def build_model(self) -> torch.nn.Module: ...

    def batches(self, kept: Sequence[tuple[int, Any]], meta: int, runtime: Runtime) -> BatchSource:
        """Training batches from the verified (pair index, label) rows."""

    def step_fn(self, model: torch.nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]: ...

    def test(self, model: torch.nn.Module) -> dict[str, Any]:
        """Test metrics of a student (at least `test_recall`, and `test_rows` per pair)."""


def share(flags: Sequence[bool | None]) -> float:
    """Share of True among the known flags (NaN when none is known)."""
    known = [f for f in flags if f is not None]
    return float(np.mean(known)) if known else float("nan")


def _round_done(round_dir: Path) -> bool:
    summary = round_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("complete", False)


def run_rounds(task: Task, rounds: Sequence[int], *, finetune: bool, seed: int, train: TrainConfig,
               optim: OptimConfig, run_dir: Path, runtime: Runtime, resume: bool) -> tuple[torch.nn.Module, list[dict]]:
    """Run the rounds (-1 = bs, then 0, 1, ...) and return the last round's student with one record per round.

    The student of round m is built under torch seed `seed + m + 1`. A later round with no verified label keeps
    the previous round's student (0 steps); a resumed run reads the label files it finds and reloads finished
    rounds from their newest checkpoint.
    """
    run_dir = Path(run_dir)
    labels_root = run_dir / "labels"
    model: torch.nn.Module | None = None
    records = []
    for meta in rounds:
        name = round_name(meta)
        round_dir = run_dir / "rounds" / name
        labels = task.read_labels(labels_root, meta) if resume else None
        if labels is None:
            labels = task.teach(model, meta)
            if runtime.is_main:
                task.write_labels(labels_root, meta, labels)
        kept = [(k, lab) for k, lab in enumerate(labels) if task.verified(lab)]
        previous = model
        if model is None or not finetune:
            with seeded(seed + meta + 1):
                model = task.build_model().to(runtime.device)
        if not kept and previous is not None:  # nothing verified: the previous round's student carries over
            model, fit = previous, {"steps": 0}
        elif resume and _round_done(round_dir):
            model = ckpt.load_into(model, ckpt.newest_checkpoint(round_dir), map_location=runtime.device).train()
            fit = json.loads((round_dir / "summary.json").read_text())
        else:
            if previous is not None and finetune:
                model.load_state_dict(previous.state_dict())
            trainer = Trainer(model, task.step_fn, config=train, optim=optim, runtime=runtime, run_dir=round_dir)
            fit = trainer.fit(task.batches(kept, meta, runtime), resume=resume)
            fit["complete"] = True
            if runtime.is_main:
                write_json(round_dir / "summary.json", fit)
        records.append({"round": name, "teacher": task.teacher_name(meta), "pairs": len(labels), "verified": len(kept),
                  "label_precision": share([task.label_correct(k, lab) for k, lab in kept]),
                  "teacher_recall": share([task.label_correct(k, lab) for k, lab in enumerate(labels)]),
                  "steps": fit["steps"], **task.test(model)})
    assert model is not None
    return model, records
