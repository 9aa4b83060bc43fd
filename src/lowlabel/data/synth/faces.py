"""The faces world: schematic frontal faces with identities, seven expressions, nuisance and graded degradations.

An identity is a vector of geometry and colour parameters (`PARAM_NAMES`); a sample is that identity under one
expression, a random nuisance (rotation, scale, shift, lighting, background) and random degradations whose
strengths give the ground-truth quality (see faces_degrade.py and docs/data/faces.md). Drawing is vectorised
numpy on coordinate grids: every part is a signed distance field turned into anti-aliased coverage, and small
parts are evaluated only in their bounding window. Same seed -> byte-identical images in any process or worker.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lowlabel.data.synth.faces_degrade import DEGRADATIONS, Degradation, degrade, quality, sample_degradation
from lowlabel.errors import LowlabelError
from lowlabel.report.figures import figure, save_figure

EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")

# Continuous identity parameters: name -> (low, high) of the uniform draw. Lengths are in face-frame units
# (the image spans [-1, 1]); names ending in _f are fractions of the face half-height `face_b`.
_RANGES: dict[str, tuple[float, float]] = {
    "face_a": (0.50, 0.66), "face_b": (0.66, 0.80), "face_square": (0.0, 0.8), "face_taper": (0.0, 0.3),
    "face_cy": (-0.02, 0.08), "eye_dx": (0.19, 0.30), "eye_y_f": (-0.22, -0.05), "eye_w": (0.085, 0.13),
    "eye_h": (0.45, 0.7), "brow_dy": (0.12, 0.18), "brow_len": (0.13, 0.21), "brow_thick": (0.035, 0.065),
    "brow_tilt": (-0.04, 0.04), "brow_arch": (-0.01, 0.04), "nose_len_f": (0.26, 0.38), "nose_w": (0.06, 0.12),
    "mouth_y_f": (0.42, 0.55), "mouth_w": (0.14, 0.24), "lip_thick": (0.022, 0.045), "mouth_lift": (-0.015, 0.015),
    "ear_size": (0.08, 0.12), "hair_part": (-0.15, 0.15),
}  # fmt: skip
_HAIR_FIELDS = ("hair_thick", "hairline", "temple", "hair_len")
# hairstyle -> (low, high) of each of _HAIR_FIELDS: short, long, fringe, receding, volume
_HAIRSTYLES = np.array([
    [(0.06, 0.12), (0.18, 0.28), (0.6, 1.1), (-0.10, 0.05)],
    [(0.08, 0.16), (0.15, 0.30), (0.7, 1.2), (0.70, 1.00)],
    [(0.06, 0.14), (0.36, 0.46), (0.0, 0.4), (0.00, 0.40)],
    [(0.01, 0.04), (0.03, 0.10), (0.8, 1.2), (-0.20, 0.00)],
    [(0.18, 0.28), (0.15, 0.25), (0.7, 1.1), (0.10, 0.40)],
], dtype=np.float64)  # fmt: skip
_COLOURS = ("skin", "hair", "iris", "lip")
PARAM_NAMES: tuple[str, ...] = (
    *_RANGES, "hairstyle", *_HAIR_FIELDS, *(f"{c}_{k}" for c in _COLOURS for k in "rgb")
)  # fmt: skip
_COLOUR_AT = {c: PARAM_NAMES.index(f"{c}_r") for c in _COLOURS}
_SKIN_LIGHT, _SKIN_DARK = np.array([0.96, 0.82, 0.72]), np.array([0.36, 0.23, 0.16])
_HAIR_PALETTE = np.array([[0.08, 0.07, 0.07], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.85, 0.70, 0.40],
                          [0.60, 0.25, 0.10], [0.65, 0.65, 0.65]])  # fmt: skip
_IRIS_PALETTE = np.array([[0.35, 0.20, 0.10], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.50, 0.55, 0.60],
                          [0.15, 0.10, 0.08]])  # fmt: skip

# Expression -> facial actions. lift: mouth-corner raise; open: mouth opening half-height; width: mouth width
# factor; tilt: mouth slope (asymmetry); teeth: show teeth; raise / inner: brow raise / extra raise of the inner
# end (negative = lowered, frown); inward: brows pulled together; eye: eye-opening factor; forehead / glabella /
# nose: amount of forehead lines, vertical lines between the brows, nose wrinkles.
_EXPR_FIELDS = ("lift", "open", "width", "tilt", "teeth", "raise", "inner", "inward", "eye", "forehead", "glabella",
                "nose")  # fmt: skip
_EXPR_TABLE = np.array([
    [0.00, 0.000, 1.00, 0.00, 0, 0.00, 0.00, 0.000, 1.00, 0.0, 0, 0],  # neutral
    [0.09, 0.040, 1.20, 0.00, 1, 0.01, 0.00, 0.000, 0.70, 0.0, 0, 0],  # happy
    [-0.07, 0.000, 0.90, 0.00, 0, -0.01, 0.07, 0.010, 0.75, 0.0, 0, 0],  # sad
    [0.00, 0.110, 0.60, 0.00, 0, 0.09, 0.00, 0.000, 1.45, 1.0, 0, 0],  # surprise
    [-0.03, 0.050, 1.25, 0.00, 1, 0.05, 0.06, 0.015, 1.35, 0.6, 0, 0],  # fear
    [-0.04, 0.025, 0.95, 0.20, 1, -0.04, -0.01, 0.010, 0.55, 0.0, 0, 1],  # disgust
    [-0.03, 0.000, 0.80, 0.00, 0, -0.03, -0.05, 0.020, 0.75, 0.0, 1, 0],  # anger
], dtype=np.float64)  # fmt: skip

# The opt-in "action_units" style (FacesConfig.expressions): every expression is the sum of a few facial action
# units (FACS numbers), most of them shared by several expressions, as in the emotion prototypes of EMFACS; each unit
# is a small change of the fields above from neutral, no larger than the identities' own spread of the part it moves
# (brow height 0.06, eye-opening factor 0.45-0.7, mouth width 0.14-0.24), and wrinkles come with the muscle that
# makes them, at the unit's strength, instead of marking one expression at full strength (docs/methods/fdrl.md).
_ACTION_UNITS: dict[int, dict[str, float]] = {  # FACS number -> change of the expression fields
    1: {"inner": 0.03, "forehead": 0.4},  # inner brow raiser
    2: {"raise": 0.03, "inner": -0.03, "forehead": 0.4},  # outer brow raiser
    4: {"raise": -0.025, "inward": 0.012, "glabella": 0.6},  # brow lowerer
    5: {"eye": 0.25},  # upper lid raiser
    6: {"eye": -0.25},  # cheek raiser (narrows the eye, as 7 does, in this drawing)
    7: {"eye": -0.25},  # lid tightener
    9: {"nose": 0.6, "raise": -0.008},  # nose wrinkler
    12: {"lift": 0.035, "width": 0.1},  # lip corner puller
    15: {"lift": -0.035},  # lip corner depressor
    20: {"width": 0.15},  # lip stretcher
    23: {"width": -0.15},  # lip tightener
    25: {"open": 0.015, "teeth": 0.6},  # lips part
    26: {"open": 0.045},  # jaw drop
}
_PROTOTYPES: dict[str, tuple[int, ...]] = {
    "neutral": (), "happy": (6, 12, 25), "sad": (1, 4, 15), "surprise": (1, 2, 5, 26), "fear": (1, 2, 4, 5, 20, 25),
    "disgust": (9, 15, 25), "anger": (4, 7, 23),
}  # fmt: skip


def _action_unit_table() -> np.ndarray:
    """(7, len(_EXPR_FIELDS)) expression fields of the "action_units" style: neutral plus the sum of the units of
    each expression's prototype."""
    table = np.repeat(_EXPR_TABLE[:1], len(EXPRESSIONS), axis=0)
    for k, name in enumerate(EXPRESSIONS):
        for unit in _PROTOTYPES[name]:
            for f, change in _ACTION_UNITS[unit].items():
                table[k, _EXPR_FIELDS.index(f)] += change
    return table


EXPRESSION_STYLES: dict[str, np.ndarray] = {"classic": _EXPR_TABLE, "action_units": _action_unit_table()}


@functools.lru_cache(maxsize=4096)
def identity_params(identity: int, seed: int = 0) -> np.ndarray:
    """Parameter vector (len(PARAM_NAMES),) float64 of one identity, read-only; deterministic in (identity, seed).

    Drawn from np.random.default_rng([seed, identity, 1]) (the trailing 1 keeps identity streams apart from the
    per-sample streams default_rng([seed, i])). Cached, since consecutive samples share identities.
    """
    if identity < 0 or seed < 0:
        raise LowlabelError(f"identity={identity} and seed={seed} must be non-negative integers")
    rng = np.random.default_rng([seed, identity, 1])
    lo, hi = np.array(list(_RANGES.values())).T
    geometry = rng.uniform(lo, hi)
    style = int(rng.integers(len(_HAIRSTYLES)))
    hair_shape = rng.uniform(_HAIRSTYLES[style, :, 0], _HAIRSTYLES[style, :, 1])
    tone = rng.random()
    skin = _SKIN_LIGHT + tone * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0.0, 0.02, 3)
    hair = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))] + rng.normal(0.0, 0.03, 3)
    iris = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))] + rng.normal(0.0, 0.03, 3)
    lip = skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0.0, 0.03, 3)
    colours = np.clip(np.concatenate([skin, hair, iris, lip]), 0.0, 1.0)
    params = np.concatenate([geometry, [style], hair_shape, colours])
    params.flags.writeable = False
    return params


@dataclass(frozen=True)
class Nuisance:
    """Per-sample nuisance: in-plane rotation (degrees), scale, shift (image half-widths), directional light
    (angle in radians, relative strength), global brightness gain, per-channel white-balance gains, background and
    shirt colours (RGB in [0, 1])."""

    rotation: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    light_angle: float = 0.0
    light_strength: float = 0.0
    brightness: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background: tuple[float, float, float] = (0.6, 0.65, 0.7)
    shirt: tuple[float, float, float] = (0.3, 0.35, 0.5)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1], shape (size,) float32."""
    g = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - np.float32(1.0)
    g.flags.writeable = False
    return g


class _Canvas:
    """A channel-first image (3, S, S) with face-frame grids U, V: image point = scale * R(rotation) (u, v) + shift."""

    def __init__(self, size: int, nz: Nuisance) -> None:
        g = _grid(size)
        th = math.radians(nz.rotation)
        self.c, self.s, self.k, self.nz, self.size = math.cos(th), math.sin(th), nz.scale, nz, size
        gx, gy = g[None, :] - np.float32(nz.shift_x), g[:, None] - np.float32(nz.shift_y)
        self.U = np.float32(self.c / self.k) * gx + np.float32(self.s / self.k) * gy
        self.V = np.float32(-self.s / self.k) * gx + np.float32(self.c / self.k) * gy
        self.inv_pix = np.float32(size * self.k / 2.0)
        self.img = np.empty((3, size, size), dtype=np.float32)
        self.img[:] = np.asarray(nz.background, dtype=np.float32).reshape(3, 1, 1)

    def window(self, cu: float, cv: float, ru: float, rv: float) -> tuple[slice, slice]:
        """Pixel slices (rows, cols) holding the face-frame rectangle |u - cu| <= ru, |v - cv| <= rv."""
        x = self.k * (self.c * cu - self.s * cv) + self.nz.shift_x
        y = self.k * (self.s * cu + self.c * cv) + self.nz.shift_y
        half, c, s = self.size / 2.0, abs(self.c), abs(self.s)
        rx, ry = (c * ru + s * rv) * self.k * half + 1.5, (s * ru + c * rv) * self.k * half + 1.5
        j, i = (x + 1.0) * half, (y + 1.0) * half
        rows = slice(min(self.size, max(0, int(i - ry))), max(0, min(self.size, int(i + ry) + 1)))
        return rows, slice(min(self.size, max(0, int(j - rx))), max(0, min(self.size, int(j + rx) + 1)))

    def paint(self, win: tuple[slice, slice], d: np.ndarray, colour: np.ndarray, alpha: float = 1.0) -> None:
        """Blend `colour` ((3, 1, 1) float32), alpha-weighted, where the signed distance d < 0 (1 px anti-aliasing)."""
        cov = np.float32(0.5) - d * self.inv_pix
        np.maximum(cov, np.float32(0.0), out=cov)
        np.minimum(cov, np.float32(alpha), out=cov)
        part = self.img[:, win[0], win[1]]
        part += cov * (colour - part)


def _ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1."""
    return (np.sqrt((u * u) * np.float32(1 / a**2) + (v * v) * np.float32(1 / b**2)) - 1.0) * np.float32(min(a, b))


def _stroke(u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float,
            arch: float = 0.0) -> np.ndarray:  # fmt: skip
    """Signed distance to a stroke of half-width r from p0 to p1, bowed up (towards -v) by `arch` at its middle."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    u0, v0 = u - p0[0], v - p0[1]
    t = (u0 * dx + v0 * dy) * np.float32(1.0 / max(dx * dx + dy * dy, 1e-12))
    np.maximum(t, np.float32(0.0), out=t)
    np.minimum(t, np.float32(1.0), out=t)
    du, dv = u0 - t * dx, v0 - t * dy
    if arch:
        dv += (4.0 * arch) * t * (1.0 - t)
    return np.sqrt(du * du + dv * dv) - np.float32(r)


@functools.lru_cache(maxsize=4096)
def _prepare(key: bytes) -> tuple[dict[str, float], tuple[np.ndarray, ...]]:
    """Parameters (as bytes of the float64 vector) -> name -> value, and skin, hair, iris, lip colours (3, 1, 1)."""
    params = np.frombuffer(key, dtype=np.float64)
    p = dict(zip(PARAM_NAMES, params.tolist(), strict=True))
    return p, tuple(params[_COLOUR_AT[c] : _COLOUR_AT[c] + 3].astype(np.float32).reshape(3, 1, 1) for c in _COLOURS)


_SCLERA, _PUPIL, _LID, _MOUTH, _TEETH = (np.array(c, np.float32).reshape(3, 1, 1) for c in (
    (0.96, 0.96, 0.94), (0.04, 0.03, 0.03), (0.12, 0.08, 0.07), (0.30, 0.06, 0.08), (0.95, 0.95, 0.90)))  # fmt: skip


def render_clean(
    params: np.ndarray,
    expression: int,
    nuisance: Nuisance,
    size: int,
    intensity: float = 1.0,
    style: str = "classic",
) -> np.ndarray:
    """Draw one undegraded face: float32 (3, size, size), channel-first, values in [0, 1] up to lighting overshoot
    (clipped when `degrade` quantises).

    params: (len(PARAM_NAMES),) from `identity_params`; expression: index into EXPRESSIONS; intensity in [0, 1]
    interpolates the facial actions between neutral (0) and the full expression (1); `style` names the expression
    table (EXPRESSION_STYLES: "classic", or "action_units", sums of shared action units). Paired parts (ears, eyes,
    brows, nostrils, wrinkles) are drawn once in the mirrored coordinate |u|.
    """
    if not 0 <= expression < len(EXPRESSIONS):
        raise LowlabelError(f"expression={expression} is not an index into EXPRESSIONS (0..{len(EXPRESSIONS) - 1})")
    if style not in EXPRESSION_STYLES:
        raise LowlabelError(f"expression style '{style}': use one of {', '.join(EXPRESSION_STYLES)}")
    table = EXPRESSION_STYLES[style]
    p, (skin, hair, iris, lip) = _prepare(np.asarray(params, dtype=np.float64).tobytes())
    actions = table[0] + intensity * (table[expression] - table[0])
    e = dict(zip(_EXPR_FIELDS, actions.tolist(), strict=True))
    cv = _Canvas(size, nuisance)
    U, V = cv.U, cv.V
    AU = np.abs(U)
    a, b, cy = p["face_a"], p["face_b"], p["face_cy"]
    eye_y, mouth_y, eye_dx = cy + p["eye_y_f"] * b, cy + p["mouth_y_f"] * b, p["eye_dx"]
    # long hair behind the head (its window also holds the hair cap), neck, shirt
    A, B, hcy = a + 0.8 * p["hair_thick"], b + p["hair_thick"], cy - 0.3 * p["hair_thick"]
    bottom = max(cy + p["hair_len"], hcy + B)
    w_hair = cv.window(0.0, 0.5 * (hcy - B + bottom), A, 0.5 * (bottom - hcy + B))
    u, v = U[w_hair], V[w_hair]
    d_hair = _ellipse(u, v - hcy, A, B)
    cv.paint(w_hair, np.where(v < cy, d_hair, np.maximum(AU[w_hair] - A, v - (cy + p["hair_len"]))), hair * 0.85)
    w = cv.window(0.0, cy + b + 0.3, 0.42 * a, 0.6)
    cv.paint(w, np.maximum(AU[w] - 0.42 * a, cy + 0.5 * b - V[w]), skin * 0.8)
    top = cy + b + 0.1
    w = cv.window(0.0, top + 0.6, 1.6, 0.6)
    cv.paint(w, (top + 0.35 * U[w] * U[w]) - V[w], np.array(nuisance.shirt, np.float32).reshape(3, 1, 1))
    # face: squircle X^2 + Y^2 - s X^2 Y^2 = 1 with a jaw taper (X^2, Y^2 capped at 1.2 keep it closed) and
    # elliptic ears, then the hair cap above the hairline
    es, ey = p["ear_size"], eye_y + 0.08
    w = cv.window(0.0, cy, a + 0.6 * es, b)
    u, vy = U[w], V[w] - cy
    x = u / (np.float32(a) - np.float32(a * p["face_taper"] / b) * np.maximum(vy, np.float32(0.0)))
    x2, y2 = np.minimum(x * x, np.float32(1.2)), np.minimum((vy * vy) * np.float32(1.0 / b**2), np.float32(1.2))
    d_face = (np.sqrt(x2 + y2 - p["face_square"] * x2 * y2) - 1.0) * np.float32(min(a, b))
    cv.paint(w, np.minimum(d_face, _ellipse(AU[w] - 0.97 * a, vy - (ey - cy), 0.55 * es, es)), skin)
    u, v = U[w_hair], V[w_hair]
    hl = (cy - b + 2.0 * b * p["hairline"]) + (p["temple"] * b / (a * a)) * u * u + p["hair_part"] * u
    cv.paint(w_hair, np.maximum(d_hair, v - hl), hair)
    # eyes: sclera, iris, pupil, lid outline
    ew, eh = p["eye_w"], p["eye_w"] * p["eye_h"]
    w = cv.window(0.0, eye_y, eye_dx + ew + 0.02, eh * e["eye"] + 0.02)
    u, v = AU[w] - eye_dx, V[w] - eye_y
    d_eye = _ellipse(u, v, ew, max(eh * e["eye"], 0.004))
    rad = np.sqrt(u * u + v * v)
    cv.paint(w, d_eye, _SCLERA)
    cv.paint(w, np.maximum(rad - np.float32(0.85 * eh), d_eye), iris)
    cv.paint(w, np.maximum(rad - np.float32(0.38 * eh), d_eye), _PUPIL)
    cv.paint(w, np.abs(d_eye) - np.float32(0.012), _LID)
    # brows (+ vertical lines between them for anger, forehead lines for surprise and fear)
    base, bl, bt = eye_y - p["brow_dy"] - e["raise"], p["brow_len"], p["brow_thick"]
    p0, p1 = (eye_dx - 0.45 * bl - e["inward"], base - e["inner"]), (eye_dx + 0.55 * bl, base + p["brow_tilt"])
    w = cv.window(0.0, base, p1[0] + bt, abs(e["inner"]) + abs(p["brow_tilt"]) + abs(p["brow_arch"]) + bt)
    cv.paint(w, _stroke(AU[w], V[w], p0, p1, 0.5 * bt, p["brow_arch"]), hair * 0.55)
    if e["glabella"] > 0:
        w = cv.window(0.0, base + 0.035, 0.05, 0.05)
        cv.paint(w, _stroke(AU[w], V[w], (0.035, base), (0.02, base + 0.07), 0.008), skin * 0.6, e["glabella"])
    if e["forehead"] > 0:
        fy = base - 0.12
        w = cv.window(0.0, fy, eye_dx, 0.06)
        v = np.abs(V[w] - fy) - np.float32(0.03)
        cv.paint(w, _stroke(AU[w], v, (0.0, 0.0), (eye_dx, 0.01), 0.008), skin * 0.7, e["forehead"])
    # nose: shadowed base and nostrils at the tip (+ disgust wrinkles beside the bridge)
    nw, tip = p["nose_w"], eye_y + p["nose_len_f"] * b
    w = cv.window(0.0, tip + 0.01, nw + 0.03, 0.06)
    cv.paint(w, _stroke(U[w], V[w], (-nw, tip), (nw, tip), 0.02, -0.025), skin * 0.65)
    cv.paint(w, _ellipse(AU[w] - 0.5 * nw, V[w] - tip, 0.35 * nw, 0.3 * nw), skin * 0.35)
    if e["nose"] > 0:
        w = cv.window(0.0, eye_y + 0.09, 0.9 * nw + 0.02, 0.05)
        d = _stroke(AU[w], V[w], (0.3 * nw, eye_y + 0.06), (0.9 * nw, eye_y + 0.12), 0.008)
        cv.paint(w, d, skin * 0.6, e["nose"])
    # mouth: lips around a centre line yc(u) (corners lifted, tilted, dropped jaw), dark opening, teeth
    mw, h = p["mouth_w"] * e["width"], e["open"]
    w = cv.window(0.0, mouth_y + 0.5 * h, mw + 0.02, 1.5 * h + 0.2 * mw + 0.06)
    u, v = U[w], V[w] - mouth_y
    xn2 = np.minimum((u * u) * np.float32(1.0 / mw**2), np.float32(1.0))
    edge = np.sqrt(1.0 - xn2)
    yc = (0.7 * h) - (e["lift"] + p["mouth_lift"]) * xn2 + e["tilt"] * u
    dv, hu = np.abs(v - yc), h * edge
    out_u = AU[w] - mw
    cv.paint(w, np.maximum(dv - hu - p["lip_thick"] * (0.35 + 0.65 * edge), out_u), lip)
    d_in = np.maximum(dv - np.maximum(hu, np.float32(0.012)), out_u + 0.05 * mw)
    cv.paint(w, d_in, _MOUTH)
    if e["teeth"] > 0 and h > 0:
        cv.paint(w, np.maximum(d_in, v - yc + 0.15 * hu), _TEETH, e["teeth"])
    # lighting: white_balance * brightness * (1 + strength * (x cos(angle) + y sin(angle))) in image coordinates
    g, k = _grid(size), nuisance.brightness * nuisance.light_strength
    cx, cy_ = np.float32(k * math.cos(nuisance.light_angle)), np.float32(k * math.sin(nuisance.light_angle))
    shade = np.float32(nuisance.brightness) + cx * g[None, :] + cy_ * g[:, None]
    cv.img *= np.asarray(nuisance.white_balance, dtype=np.float32).reshape(3, 1, 1) * shade
    return cv.img


def render_face(params: np.ndarray, expression: int, nuisance: Nuisance, degradation: Degradation, size: int,
                intensity: float = 1.0, style: str = "classic") -> np.ndarray:  # fmt: skip
    """Draw one face and apply `degradation`: uint8 HxWx3. Pure function of its arguments."""
    return degrade(render_clean(params, expression, nuisance, size, intensity, style), degradation)


@dataclass(frozen=True)
class FacesConfig:
    """Distribution of samples. Strength maxima are in the normalised units of faces_degrade.DEGRADATIONS."""

    size: int = 64
    expression_probs: tuple[float, ...] = (1.0,) * 7
    intensity_range: tuple[float, float] = (0.6, 1.0)
    max_rotation: float = 8.0
    scale_range: tuple[float, float] = (0.92, 1.08)
    max_shift: float = 0.05
    max_light: float = 0.3
    brightness_range: tuple[float, float] = (0.8, 1.15)
    max_white_balance: float = 0.12
    clean_fraction: float = 0.25
    apply_prob: float = 0.3
    max_strengths: dict[str, float] = field(
        default_factory=lambda: {"occlusion": 0.5, "blur": 1.0, "lowres": 1.0, "noise": 1.0, "jpeg": 1.0}
    )
    expressions: str = "classic"  # expression table (EXPRESSION_STYLES); "action_units" is opt-in

    def __post_init__(self) -> None:
        if self.size < 16:
            raise LowlabelError(f"faces size={self.size} is too small; use at least 16 pixels")
        probs = np.asarray(self.expression_probs, dtype=np.float64)
        if probs.shape != (len(EXPRESSIONS),) or (probs < 0).any() or probs.sum() <= 0:
            raise LowlabelError(f"expression_probs must be {len(EXPRESSIONS)} non-negative weights, not a zero vector")
        for name in ("clean_fraction", "apply_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise LowlabelError(f"faces {name}={getattr(self, name)} must lie in [0, 1]")
        if set(self.max_strengths) != set(DEGRADATIONS) or not all(0 <= v <= 1 for v in self.max_strengths.values()):
            raise LowlabelError(f"max_strengths needs a value in [0, 1] for each of {', '.join(DEGRADATIONS)}")
        if self.expressions not in EXPRESSION_STYLES:
            raise LowlabelError(f"faces expressions='{self.expressions}': use one of {', '.join(EXPRESSION_STYLES)}")
        for name in ("intensity_range", "scale_range", "brightness_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise LowlabelError(f"faces {name}={(lo, hi)} must satisfy 0 <= low <= high")

    @functools.cached_property
    def expression_cdf(self) -> list[float]:
        """Cumulative normalised expression_probs."""
        probs = np.asarray(self.expression_probs, dtype=np.float64)
        return np.cumsum(probs / probs.sum()).tolist()


@dataclass
class FaceSample:
    """One generated face with its ground truth. image: uint8 HxWx3 (degraded); quality in [0, 1]."""

    image: np.ndarray
    identity: int
    expression: int
    intensity: float
    nuisance: Nuisance
    degradation: Degradation
    quality: float

    @property
    def strengths(self) -> dict[str, float]:
        """Degradation strengths keyed by the names in DEGRADATIONS."""
        return self.degradation.strengths()


def sample_nuisance(rng: np.random.Generator, cfg: FacesConfig) -> Nuisance:
    """Draw rotation, scale, shift, lighting, white balance and colours uniformly from the ranges in `cfg`."""
    u = rng.random(16)
    colours = 0.1 + 0.8 * u[7:13]
    wb = 1.0 + cfg.max_white_balance * (2.0 * u[13:16] - 1.0)
    return Nuisance(
        rotation=float((2 * u[0] - 1) * cfg.max_rotation),
        scale=float(cfg.scale_range[0] + u[1] * (cfg.scale_range[1] - cfg.scale_range[0])),
        shift_x=float((2 * u[2] - 1) * cfg.max_shift),
        shift_y=float((2 * u[3] - 1) * cfg.max_shift),
        light_angle=float(2 * math.pi * u[4]),
        light_strength=float(u[5] * cfg.max_light),
        brightness=float(cfg.brightness_range[0] + u[6] * (cfg.brightness_range[1] - cfg.brightness_range[0])),
        white_balance=(float(wb[0]), float(wb[1]), float(wb[2])),
        background=(float(colours[0]), float(colours[1]), float(colours[2])),
        shirt=(float(colours[3]), float(colours[4]), float(colours[5])),
    )


def sample_face(rng: np.random.Generator, cfg: FacesConfig, identity: int, seed: int = 0) -> FaceSample:
    """Draw expression, intensity, nuisance and degradation of one image of `identity` and render it.

    Deviation from the brief's `sample_face(rng, cfg)`: the identity (and the seed of its parameters) is passed in,
    since a sample always belongs to a known identity.
    """
    u = rng.random(2)
    expression = min(bisect.bisect_right(cfg.expression_cdf, u[0]), len(EXPRESSIONS) - 1)
    intensity = float(cfg.intensity_range[0] + u[1] * (cfg.intensity_range[1] - cfg.intensity_range[0]))
    nuisance = sample_nuisance(rng, cfg)
    deg = sample_degradation(rng, cfg.clean_fraction, cfg.apply_prob, cfg.max_strengths)
    image = render_face(
        identity_params(identity, seed), expression, nuisance, deg, cfg.size, intensity, cfg.expressions
    )
    return FaceSample(image, identity, expression, intensity, nuisance, deg, quality(deg))


class FacesDataset(Dataset):
    """`n_identities * images_per_identity` faces; item i shows identity i // images_per_identity.

    Item i is drawn from np.random.default_rng([seed, i]) alone, so it is identical in any process or worker.
    __getitem__ returns image (3, size, size) float32 in [0, 1], identity and expression (int64 scalars),
    quality (float32 scalar) and degradation (5,) float32 strengths in the order of DEGRADATIONS.
    """

    def __init__(self, n_identities: int, images_per_identity: int, seed: int = 0, cfg: FacesConfig | None = None):
        if n_identities < 1 or images_per_identity < 1 or seed < 0:
            raise LowlabelError(
                f"FacesDataset needs n_identities >= 1, images_per_identity >= 1 and seed >= 0, got {n_identities}, "
                f"{images_per_identity} and {seed}"
            )
        self.n_identities, self.images_per_identity, self.seed = n_identities, images_per_identity, seed
        self.cfg = cfg if cfg is not None else FacesConfig()

    def __len__(self) -> int:
        return self.n_identities * self.images_per_identity

    def sample(self, i: int) -> FaceSample:
        """The raw FaceSample of item i."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} is out of range for a FacesDataset of {len(self)} images")
        return sample_face(np.random.default_rng([self.seed, i]), self.cfg, i // self.images_per_identity, self.seed)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.sample(int(i))
        return {
            "image": torch.from_numpy(s.image.transpose(2, 0, 1) * np.float32(1.0 / 255.0)),
            "identity": torch.scalar_tensor(s.identity, dtype=torch.int64),
            "expression": torch.scalar_tensor(s.expression, dtype=torch.int64),
            "quality": torch.scalar_tensor(s.quality, dtype=torch.float32),
            "degradation": torch.from_numpy(np.array(list(s.strengths.values()), dtype=np.float32)),
        }


def preview(n: int = 16, out: Path = Path("faces_preview.png"), seed: int = 0) -> Path:
    """Write a PNG grid of `n` faces (one identity per row) captioned with identity, expression, quality and the
    strengths of the degradations applied."""
    if n < 1:
        raise LowlabelError(f"preview needs n >= 1 images, got {n}")
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    data = FacesDataset(rows, cols, seed=seed)
    fig, axes = figure(rows, cols, figsize=(1.5 * cols, 2.0 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            s = data.sample(i)
            ax.imshow(s.image, interpolation="nearest")
            degs = " ".join(f"{k[:4]} {v:.2g}" for k, v in s.strengths.items() if v > 0) or "clean"
            ax.set_title(f"id {s.identity} {EXPRESSIONS[s.expression]}\nq={s.quality:.2f}\n{degs}", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
