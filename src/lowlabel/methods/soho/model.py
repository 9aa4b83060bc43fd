"""SOHO's networks: CNN backbone -> visual neck with the Visual Dictionary -> BERT-style fusion Transformer + heads.

Spec "Architecture": C5 features are max-pooled 2x2, projected by a 1x1 conv + BN to the hidden size, quantised by
the Visual Dictionary, mixed with the unquantised features by a learned gate, MVM-masked, given a 2-D sine position
encoding and layer-normalised; the Transformer sees [text embeddings ; visual tokens]. Heads: MLM decoder tied to the
word embeddings, ITM linear on output 0, MVM cosine scores against the dictionary (in losses.py), VQA MLP.
Layer and embedding keys load from a BERT/MiniLM checkpoint through `load_minilm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.masking import IGNORE, mvm_mask
from lowlabel.nn.heads import Layer, build_mlp
from lowlabel.nn.quantize import VisualDictionary
from lowlabel.nn.resnet import ARCHS, ResNet
from lowlabel.nn.text import minilm_path


def sine_position_encoding(valid: Tensor, channels: int) -> Tensor:
    """2-D sine position encoding (DETR style, as the official neck): valid (B, H, W) bool -> (B, channels, H, W).

    With D = channels / 2: y = cumsum of `valid` down the rows, x = along the columns, each divided by its value in
    the last row / column (+1e-6) and times 2π; channel 2j (2j+1) of the first D is sin (cos) of
    y / 10000^(2j/D), the last D the same for x. channels must be a multiple of 4. float32.
    """
    if channels % 4:
        raise LowlabelError(f"sine position encoding needs channels divisible by 4, got {channels}")
    if valid.ndim != 3:
        raise LowlabelError(f"valid mask must be (B, H, W), got {tuple(valid.shape)}")
    mask = valid.float()
    y = mask.cumsum(1)
    x = mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    half = channels // 2
    dim_t = 10000 ** (2 * (torch.arange(half, device=valid.device) // 2).float() / half)
    parts = []
    for coord in (y, x):
        pos = coord[..., None] / dim_t
        pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(3)
        parts.append(pos)
    return torch.cat(parts, dim=3).permute(0, 3, 1, 2)


def grid_valid(pixel_valid: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour downsampling of a (B, H, W) bool pixel mask to the token grid (B, h, w).

    Deviation: the official mask is built max(pad_h) x max(pad_h) (height used for the width), which marks
    right-hand padding of landscape images valid; here each image's own padded area stays invalid.
    """
    return F.interpolate(pixel_valid[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def _kaiming_conv(conv: nn.Conv2d, generator: torch.Generator | None) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=generator)  # mmcv defaults
    return conv


@dataclass
class NeckOutput:
    """tokens (B, T, d); valid (B, T) bool; mvm_labels (B, T) long (-100 off the mask); indices (B, T) or None."""

    tokens: Tensor
    valid: Tensor
    mvm_labels: Tensor
    indices: Tensor | None


class VisualNeck(nn.Module):
    """C5 map -> visual tokens (official `SimpleVDforPreGate`; with `use_dictionary=False`, `SimpleVDforVQA`).

    `pool`: the official 2x2 max-pool on C5 (tokens at stride 64). Official BN is SyncBN: convert with
    `nn.SyncBatchNorm.convert_sync_batchnorm` under DDP. The gate and `pos_line` are code additions to the paper,
    which feeds the dictionary embedding itself. The dictionary sees every grid location, padding included, as
    officially; padded tokens are only excluded from MVM targets and from attention.
    """

    def __init__(self, *, in_channels: int, dim: int = 768, num_codes: int = 2048, decay: float = 0.4,
                 mask_prob: float = 0.015, use_dictionary: bool = True, pool: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.dim, self.mask_prob, self.pool = dim, mask_prob, pool
        self.conv = _kaiming_conv(nn.Conv2d(in_channels, dim, 1, bias=False), generator)
        self.bn = nn.BatchNorm2d(dim)
        self.ln = nn.LayerNorm(dim)
        self.dictionary: VisualDictionary | None = None
        if use_dictionary:
            self.dictionary = VisualDictionary(num_codes, dim, decay, generator=generator)
            self.pos_line = nn.Linear(dim, dim)
            self.gate_conv = _kaiming_conv(nn.Conv2d(2 * dim, 2, 1, bias=False), generator)
            self.gate_bn = nn.BatchNorm2d(2)
            self.mask_emb = nn.Parameter(torch.randn(dim, generator=generator))

    def forward(self, features: Tensor, pixel_valid: Tensor | None = None, *, mvm: bool | None = None,
                generator: torch.Generator | None = None) -> NeckOutput:
        """features (B, C, H, W); pixel_valid (B, H_img, W_img) bool or None (all valid). With `mvm` (default: in
        training mode) and a dictionary, one visual word per masked row becomes the mask embedding (mvm_mask)."""
        if self.pool:
            features = F.max_pool2d(features, 2, stride=2)
        x = self.bn(self.conv(features))
        b, d, h, w = x.shape
        valid = (torch.ones(b, h, w, dtype=torch.bool, device=x.device) if pixel_valid is None
                 else grid_valid(pixel_valid, (h, w)))
        labels = torch.full((b, h * w), IGNORE, dtype=torch.long, device=x.device)
        indices = None
        if self.dictionary is not None:
            q, flat_idx = self.dictionary(x.permute(0, 2, 3, 1).reshape(-1, d))
            q = self.pos_line(q).view(b, h, w, d).permute(0, 3, 1, 2)
            gate = torch.softmax(self.gate_bn(self.gate_conv(torch.cat([q, x], dim=1))), dim=1)
            x = gate[:, :1] * q + gate[:, 1:] * x
            indices = flat_idx.view(b, h * w)
            if (self.training if mvm is None else mvm) and self.mask_prob > 0:
                masked, labels = mvm_mask(indices, valid.view(b, -1), generator=generator, prob=self.mask_prob)
                x = torch.where(masked.view(b, 1, h, w), self.mask_emb.view(1, d, 1, 1).to(x.dtype), x)
        x = x + sine_position_encoding(valid, d).to(x.dtype)
        tokens = self.ln(x.flatten(2).transpose(1, 2))
        return NeckOutput(tokens, valid.view(b, -1), labels, indices)


class TextEmbeddings(nn.Module):
    """BERT input embeddings: word + position + token type 0, LayerNorm (eps 1e-12), dropout."""

    def __init__(self, *, vocab_size: int, dim: int, max_positions: int = 512, type_vocab: int = 2,
                 dropout: float = 0.1, pad_id: int = 0) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position = nn.Embedding(max_positions, dim)
        self.token_type = nn.Embedding(type_vocab, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, dim)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type.weight[0]
        return self.dropout(self.norm(x))


class TransformerLayer(nn.Module):
    """Post-LN BERT layer: x <- LN(x + Drop(Attn(x))); x <- LN(x + Drop(W2 GELU(W1 x))); LN eps 1e-12."""

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise LowlabelError(f"hidden size {dim} is not a multiple of the {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-12)
        self.ffn_in, self.ffn_out = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x (B, S, dim); bias (B, 1, 1, S) additive attention bias (0 or -10000 per key)."""
        b, s, d = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)

        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=bias.to(x.dtype), dropout_p=p)
        x = self.attn_norm(x + F.dropout(self.attn_out(att.transpose(1, 2).reshape(b, s, d)), p, self.training))
        return self.ffn_norm(x + F.dropout(self.ffn_out(F.gelu(self.ffn_in(x))), p, self.training))


@dataclass
class SOHOOutput:
    """text (B, L, d) and visual (B, T, d) fused outputs; itm_logits (B, 2); visual_valid (B, T) bool;
    mvm_labels (B, T) long; indices (B, T) dictionary index per visual token (None without a dictionary);
    mlm_logits (M, vocab) at the M text positions whose `mlm_labels` given to forward are not -100 (else None)."""

    text: Tensor
    visual: Tensor
    itm_logits: Tensor
    visual_valid: Tensor
    mvm_labels: Tensor
    indices: Tensor | None
    mlm_logits: Tensor | None = None


def resnet_backbone(arch: str = "resnet18", *, width: int = 64, small_stem: bool = False) -> ResNet:
    """A lowlabel ResNet without classifier (`forward_features` gives C5, `feature_dim` channels)."""
    if arch not in ARCHS:
        raise LowlabelError(f"unknown backbone '{arch}'; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](num_classes=0, width=width, small_stem=small_stem)


def resnet_frozen(stages: int) -> tuple[str, ...]:
    """Names of the ResNet children frozen by mmdet's `frozen_stages` (official 1: stem + layer1)."""
    return (("conv1", "bn1") if stages >= 1 else ()) + tuple(f"layer{i}" for i in range(1, min(stages, 4) + 1))


def mobilenet_frozen(stages: int) -> tuple[str, ...]:
    """MobileNetV2 blocks frozen by the analogue of `frozen_stages`: stage s ends at stride 2^(s+1), so 1 freezes
    `features.0`-`features.3` (stride 4, as ResNet's stem + layer1), 4 everything up to stride 32."""
    ends = (3, 6, 13, 18)  # last block at strides 4, 8, 16, 32 (lowlabel.nn.mobilenet.STAGE_ENDS)
    return tuple(f"features.{i}" for i in range(ends[min(stages, 4) - 1] + 1)) if stages >= 1 else ()


class SOHO(nn.Module):
    """The pre-training model (official `SOHOSingleStreamPre` with `VLBertModel` and `MLM_MVM_ITM_head`).

    backbone: any module with `forward_features(images) -> (N, backbone_channels, h, w)`; `frozen` names its
    submodules to freeze (dotted names such as "features.0"; no gradient, BN kept in eval mode).
    Official: ResNet-18, frozen stem + layer1, hidden 768, 3 layers, 12 heads, FFN 3072, 2048 codes, decay 0.4,
    MVM probability 0.015.
    Weights: Transformer Linear/Embedding N(0, 0.02), biases 0, LN 1/0 (official init without a checkpoint);
    ITM Kaiming-normal; the MLM decoder is the word-embedding matrix (no bias).
    """

    def __init__(self, *, backbone: nn.Module, backbone_channels: int, vocab_size: int, frozen: Sequence[str] = (),
                 hidden: int = 768, layers: int = 3, heads: int = 12, ffn: int = 3072, max_positions: int = 512,
                 num_codes: int = 2048, decay: float = 0.4, mask_prob: float = 0.015, use_dictionary: bool = True,
                 pool: bool = True, dropout: float = 0.1, pad_id: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen = tuple(frozen)
        for name in self.frozen:
            self.backbone.get_submodule(name).requires_grad_(False)
        self.neck = VisualNeck(in_channels=backbone_channels, dim=hidden, num_codes=num_codes, decay=decay,
                               mask_prob=mask_prob, use_dictionary=use_dictionary, pool=pool, generator=generator)
        self.text = TextEmbeddings(vocab_size=vocab_size, dim=hidden, max_positions=max_positions, dropout=dropout,
                                   pad_id=pad_id)
        self.layers = nn.ModuleList(TransformerLayer(dim=hidden, heads=heads, ffn=ffn, dropout=dropout)
                                    for _ in range(layers))
        self.itm_head = nn.Linear(hidden, 2, bias=False)
        with torch.no_grad():
            for m in [*self.text.modules(), *self.layers.modules()]:
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, 0.02, generator=generator)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
        nn.init.kaiming_normal_(self.itm_head.weight, generator=generator)

    def train(self, mode: bool = True) -> SOHO:
        super().train(mode)
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        return self

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """(..., d) fused text outputs -> (..., vocab) logits with the tied word-embedding decoder."""
        return F.linear(hidden, self.text.word.weight)

    def fuse(self, features: Tensor, input_ids: Tensor, attention_mask: Tensor, *, image_index: Tensor | None = None,
             pixel_valid: Tensor | None = None, mvm: bool | None = None, generator: torch.Generator | None = None,
             mlm_labels: Tensor | None = None) -> SOHOOutput:
        """C5 features (N, C, h, w) of N images + B captions (input_ids, attention_mask: (B, L)) -> SOHOOutput.

        image_index (B,) picks each caption's image (default: caption b goes with image b); the features are
        repeated before the neck, as officially (the dictionary and BN see the copies). `mvm`: mask visual words
        (default: in training mode); `generator` drives that masking. `mlm_labels` (B, L): the MLM decoder runs on
        the positions that are not -100 (inside forward, so that DDP sees the tied decoder's gradient).
        """
        if image_index is not None:
            features = features[image_index]
            pixel_valid = None if pixel_valid is None else pixel_valid[image_index]
        if features.shape[0] != input_ids.shape[0]:
            raise LowlabelError(f"{features.shape[0]} images for {input_ids.shape[0]} captions; pass image_index")
        neck = self.neck(features, pixel_valid, mvm=mvm, generator=generator)
        x = torch.cat([self.text(input_ids), neck.tokens], dim=1)
        keep = torch.cat([attention_mask.bool(), neck.valid], dim=1)
        bias = (~keep).to(x.dtype)[:, None, None, :] * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        length = input_ids.shape[1]
        text = x[:, :length]
        mlm = None if mlm_labels is None else self.mlm_logits(text[mlm_labels != IGNORE])
        return SOHOOutput(text, x[:, length:], self.itm_head(x[:, 0]), neck.valid, neck.mvm_labels, neck.indices,
                          mlm)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, *,
                image_index: Tensor | None = None, pixel_valid: Tensor | None = None, mvm: bool | None = None,
                generator: torch.Generator | None = None, mlm_labels: Tensor | None = None) -> SOHOOutput:
        """images (N, 3, H, W) (padded; `pixel_valid` (N, H, W) marks real pixels) + captions -> SOHOOutput."""
        return self.fuse(self.backbone.forward_features(images), input_ids, attention_mask, image_index=image_index,
                         pixel_valid=pixel_valid, mvm=mvm, generator=generator, mlm_labels=mlm_labels)


class VQAHead(nn.Module):
    """Answer classifier on fused output 0: Linear(d, 4d) - ReLU - Dropout(0.5) - Linear(4d, A), Kaiming-normal."""

    def __init__(self, *, hidden: int, num_answers: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.mlp = build_mlp(hidden, [Layer(4 * hidden, act="relu", dropout=0.5), Layer(num_answers)])
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, generator=generator)

    def forward(self, fused_text: Tensor) -> Tensor:
        """(B, L, d) fused text outputs -> (B, A) answer logits."""
        return self.mlp(fused_text[:, 0])


class SOHOForVQA(nn.Module):
    """The VQA model: a SOHO encoder (officially with the `SimpleVDforVQA` neck: no dictionary, gate or masking)
    and a VQAHead on its output 0. forward(images, question ids, mask, image_index=, pixel_valid=) -> (B, A)."""

    def __init__(self, encoder: SOHO, *, num_answers: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = VQAHead(hidden=encoder.itm_head.in_features, num_answers=num_answers, generator=generator)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, *,
                image_index: Tensor | None = None, pixel_valid: Tensor | None = None) -> Tensor:
        out = self.encoder(images, input_ids, attention_mask, image_index=image_index, pixel_valid=pixel_valid,
                           mvm=False)
        return self.head(out.text)


_LAYER_KEYS = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
               "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
               "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm"}
_EMBED_KEYS = {"word_embeddings": "word", "position_embeddings": "position", "token_type_embeddings": "token_type",
               "LayerNorm": "norm"}


def minilm_state(model: SOHO, path: str | Path | None = None) -> dict[str, Tensor]:
    """The text embeddings and first len(model.layers) layers of all-MiniLM-L6-v2 (or any BERT safetensors file at
    `path`) under `model`'s key names, checked against its shapes (official: first layers of bert-base,
    strict=False). Load with `model.load_state_dict(state, strict=False)`."""
    file = Path(path) if path is not None else minilm_path() / "model.safetensors"
    if not file.is_file():
        raise LowlabelError(f"{file}: weights file not found; give a BERT/MiniLM model.safetensors")
    from safetensors.torch import load_file  # installed with the `text` extra

    raw = {k.removeprefix("bert."): v for k, v in load_file(str(file)).items()}
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        parts = key.split(".")
        if parts[0] == "embeddings" and parts[1] in _EMBED_KEYS:
            state[f"text.{_EMBED_KEYS[parts[1]]}.{parts[-1]}"] = value
        elif parts[:2] == ["encoder", "layer"] and int(parts[2]) < len(model.layers):
            inner = ".".join(parts[3:-1])
            if inner in _LAYER_KEYS:
                state[f"layers.{parts[2]}.{_LAYER_KEYS[inner]}.{parts[-1]}"] = value
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if own[k].shape != v.shape]
    if bad or len(state) != 5 + 16 * len(model.layers):
        raise LowlabelError(f"{file}: does not fit the SOHO text side ({len(state)} tensors matched; shape "
                            f"mismatches: {bad[:3]}); build SOHO with hidden/ffn/heads/vocab of the checkpoint and "
                            "at most as many layers")
    return state
