"""The faces world's opt-in "action_units" expressions (FDRL's fine-grained world): the default world is unchanged,
and an action-unit expression changes a face only where its units act, by less than one identity differs from
another."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lowlabel.data.synth.faces import (
    EXPRESSION_STYLES,
    EXPRESSIONS,
    PARAM_NAMES,
    FacesConfig,
    FacesDataset,
    Nuisance,
    identity_params,
    render_clean,
)
from lowlabel.errors import LowlabelError
from lowlabel.methods.fdrl import demo, recipe
from lowlabel.methods.fdrl.data import faces_world
from lowlabel.methods.fdrl.pretrain import SEED_OFFSET, PretrainSettings, identity_splits

# FACS units by the part of the face they move (faces.py `_ACTION_UNITS`), and each expression's units (EMFACS)
BROW_UNITS, EYE_UNITS, MOUTH_UNITS = {1, 2, 4, 9}, {5, 6, 7}, {12, 15, 20, 23, 25, 26}
UNITS = {"neutral": set(), "happy": {6, 12, 25}, "sad": {1, 4, 15}, "surprise": {1, 2, 5, 26},
         "fear": {1, 2, 4, 5, 20, 25}, "disgust": {9, 15, 25}, "anger": {4, 7, 23}}  # fmt: skip


def _digest(cfg: FacesConfig, n_identities: int, per_identity: int, seed: int) -> str:
    data = FacesDataset(n_identities, per_identity, seed=seed, cfg=cfg)
    return hashlib.sha256(b"".join(data.sample(i).image.tobytes() for i in range(len(data)))).hexdigest()


def test_default_world_is_the_world_before_the_option() -> None:
    # digests and sums recorded from faces.py before the "expressions" option existed
    assert _digest(FacesConfig(size=32), 3, 4, 7) == "ec4c055e8a2be5685b5af7b99df66efaab74dbfdd803622dc8fd58066b8796a7"
    assert (
        _digest(FacesConfig(size=48, clean_fraction=1.0), 2, 7, 3)
        == "6ebc2656cabe30991a7c327fd212012d335f4be25db8a668f3d9861972e8293e"
    )
    sums = [3032.0251, 3030.1833, 3032.7712, 3011.3296, 3022.8838, 3034.7646, 3033.5615]
    for k, expected in enumerate(sums):
        assert float(render_clean(identity_params(5, 0), k, Nuisance(), 40, 0.8).sum()) == pytest.approx(
            expected, abs=2e-3
        )


def test_action_unit_rows_are_neutral_plus_their_units_by_hand() -> None:
    fields = ("lift", "open", "width", "tilt", "teeth", "raise", "inner", "inward", "eye", "forehead", "glabella",
              "nose")  # fmt: skip
    table = dict(zip(EXPRESSIONS, EXPRESSION_STYLES["action_units"].tolist(), strict=True))
    neutral = dict.fromkeys(fields, 0.0) | {"width": 1.0, "eye": 1.0}
    # happy = AU6 (eye -0.25) + AU12 (lift 0.035, width 0.1) + AU25 (open 0.015, teeth 0.6)
    happy = neutral | {"eye": 0.75, "lift": 0.035, "width": 1.1, "open": 0.015, "teeth": 0.6}
    # surprise = AU1 (inner 0.03, forehead 0.4) + AU2 (raise 0.03, inner -0.03, forehead 0.4) + AU5 (eye 0.25)
    #            + AU26 (open 0.045)
    surprise = neutral | {"raise": 0.03, "forehead": 0.8, "eye": 1.25, "open": 0.045}
    for name, expected in (("neutral", neutral), ("happy", happy), ("surprise", surprise)):
        assert table[name] == pytest.approx([expected[f] for f in fields])
    assert EXPRESSION_STYLES["action_units"][0].tolist() == EXPRESSION_STYLES["classic"][0].tolist()


def _bands(identity: int, size: int) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks of the brows and forehead, the lower half of the eyes (brows never reach it) and
    the mouth of an upright, centred face, from the identity's geometry (faces.render_clean), with a 2-pixel margin
    from the parts between them."""
    p = dict(zip(PARAM_NAMES, identity_params(identity, 0).tolist(), strict=True))
    g = (np.arange(size) + 0.5) * 2.0 / size - 1.0
    u, v, margin = np.abs(g)[None, :], g[:, None], 4.0 / size
    eye_y = p["face_cy"] + p["eye_y_f"] * p["face_b"]
    eh = p["eye_w"] * p["eye_h"]
    tip = eye_y + p["nose_len_f"] * p["face_b"]
    brows = np.broadcast_to(v < eye_y - 1.25 * eh - 0.012 - margin, (size, size))
    eyes = (np.abs(u - p["eye_dx"]) < 0.5 * p["eye_w"]) & (v > eye_y) & (v < eye_y + eh)  # lower lids
    mouth = np.broadcast_to(v > tip + 0.04 + margin, (size, size))
    return {"brows": brows, "eyes": eyes, "mouth": mouth}


@pytest.mark.parametrize("identity", [0, 1, 2, 3, 4, 5])
def test_an_expression_moves_only_the_parts_of_its_units(identity: int) -> None:
    size = 96
    params = identity_params(identity, 0)
    neutral = render_clean(params, 0, Nuisance(), size, 1.0, "action_units")
    bands = _bands(identity, size)
    for k, name in enumerate(EXPRESSIONS):
        changed = np.abs(render_clean(params, k, Nuisance(), size, 1.0, "action_units") - neutral).max(0) > 1e-6
        for band, units in (("brows", BROW_UNITS), ("eyes", EYE_UNITS), ("mouth", MOUTH_UNITS)):
            assert changed[bands[band]].any() == bool(UNITS[name] & units), (name, band)


def test_action_unit_expressions_are_finer_than_identity_differences() -> None:
    size, n = 48, 12
    faces = np.stack(
        [
            [
                render_clean(identity_params(i, 0), k, Nuisance(), size, 0.8, "action_units")
                for k in range(len(EXPRESSIONS))
            ]
            for i in range(n)
        ]
    )  # (identity, expression, 3, S, S)
    classic = np.stack(
        [
            [render_clean(identity_params(i, 0), k, Nuisance(), size, 0.8) for k in range(len(EXPRESSIONS))]
            for i in range(n)
        ]
    )
    expression_change = np.abs(faces[:, 1:] - faces[:, :1]).mean()
    identity_change = np.abs(faces[1:] - faces[:1]).mean()
    assert expression_change < 0.6 * np.abs(classic[:, 1:] - classic[:, :1]).mean()
    assert expression_change < 0.1 * identity_change


def test_the_option_changes_the_drawing_only() -> None:
    classic = faces_world(3, 7, seed=4, size=32)
    units = faces_world(3, 7, seed=4, size=32, expressions="action_units")
    assert units["labels"].tolist() == classic["labels"].tolist()
    assert units["identities"].tolist() == classic["identities"].tolist()
    neutral = classic["labels"] == EXPRESSIONS.index("neutral")
    assert neutral.any() and (units["images"][neutral] == classic["images"][neutral]).all()
    assert not (units["images"][~neutral] == classic["images"][~neutral]).all()


def test_expression_splits_and_pretraining_draw_the_configured_table() -> None:
    world = recipe.WorldConfig(
        train_identities=2, test_identities=1, images_per_identity=7, size=32, expressions="action_units", seed=4
    )
    split = recipe.load_split(recipe.Config(world=world), None, "train")
    assert torch.equal(split.inputs, faces_world(2, 7, seed=4, size=32, expressions="action_units")["images"])
    train, _ = identity_splits(world, PretrainSettings(identities=2, images_per_identity=5))
    drawn = faces_world(2, 7, seed=4 + SEED_OFFSET, size=32, expressions="action_units")["images"]
    assert torch.equal(train.inputs, drawn[torch.arange(14) % 7 < 5])
    assert demo.demo_config(False, 3, expressions="action_units").world.expressions == "action_units"
    assert demo.demo_config(False, 3).world.expressions == demo.WORLD


def test_an_unknown_expression_table_is_a_clear_error() -> None:
    with pytest.raises(LowlabelError, match="expressions='smiles'"):
        FacesConfig(expressions="smiles")
    with pytest.raises(LowlabelError, match="action_units"):
        render_clean(identity_params(0), 1, Nuisance(), 32, style="smiles")
