"""MLP and projection heads built from a list of layer specs (Linear or 1x1 conv, optional norm/activation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

_ACTS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
         "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True), "softmax": lambda: nn.Softmax(dim=1)}


@dataclass(frozen=True)
class Layer:
    """One layer: Linear (or 1x1 conv) to `out` features, then optional norm ('bn'|'ln'), activation, dropout."""

    out: int
    norm: str | None = None
    act: str | None = None
    dropout: float = 0.0
    bias: bool = True


def build_mlp(in_features: int, layers: Sequence[Layer], *, conv1x1: bool = False) -> nn.Sequential:
    """Stack `layers` on `in_features` inputs; with `conv1x1` the linear maps are 1x1 Conv2d on (B, C, H, W)."""
    if conv1x1 and any(layer.norm == "ln" for layer in layers):
        raise ValueError("build_mlp: LayerNorm is not supported on 1x1-conv heads")
    modules: list[nn.Module] = []
    width = in_features
    for layer in layers:
        modules.append(nn.Conv2d(width, layer.out, 1, bias=layer.bias) if conv1x1
                       else nn.Linear(width, layer.out, bias=layer.bias))
        if layer.norm == "bn":
            modules.append(nn.BatchNorm2d(layer.out) if conv1x1 else nn.BatchNorm1d(layer.out))
        elif layer.norm == "ln":
            modules.append(nn.LayerNorm(layer.out))
        elif layer.norm is not None:
            raise ValueError(f"build_mlp: unknown norm '{layer.norm}' (use 'bn', 'ln' or None)")
        if layer.act is not None:
            if layer.act not in _ACTS:
                raise ValueError(f"build_mlp: unknown activation '{layer.act}'; known: {', '.join(_ACTS)}")
            modules.append(_ACTS[layer.act]())
        if layer.dropout > 0:
            modules.append(nn.Dropout(layer.dropout))
        width = layer.out
    return nn.Sequential(*modules)


def mlp(dims: Sequence[int], *, norm: str | None = "bn", act: str | None = "relu", out_norm: str | None = None,
        out_act: str | None = None, conv1x1: bool = False) -> nn.Sequential:
    """dims [d0, d1, ..., dn]: hidden layers get `norm` + `act`; the last gets `out_norm` + `out_act`."""
    if len(dims) < 2:
        raise ValueError("mlp: dims needs at least an input and an output width")
    hidden = [Layer(d, norm, act) for d in dims[1:-1]]
    return build_mlp(dims[0], [*hidden, Layer(dims[-1], out_norm, out_act)], conv1x1=conv1x1)


def fcn_head(in_channels: int, n_classes: int, *, channels: int = 64, num_convs: int = 1,
             dropout: float = 0.1) -> nn.Sequential:
    """A light FCN segmentation head on a backbone map (B, in_channels, h, w) -> logits (B, n_classes, h, w):
    `num_convs` x (3x3 conv without bias -> BN -> ReLU), dropout, then a 1x1 classifier conv; the caller upsamples.

    mmsegmentation's FCNHead as used by the DenseCL paper's segmentation transfer (FCN-R50-D8) has two 3x3 convs of
    512 channels and concatenates the input before the classifier; this keeps its shape at a width for small maps."""
    if num_convs < 1:
        raise ValueError("fcn_head: num_convs must be at least 1")
    modules: list[nn.Module] = []
    width = in_channels
    for _ in range(num_convs):
        modules += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True)]
        width = channels
    if dropout > 0:
        modules.append(nn.Dropout2d(dropout))
    modules.append(nn.Conv2d(width, n_classes, 1))
    return nn.Sequential(*modules)
