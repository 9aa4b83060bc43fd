"""DenseCL equations against hand-computed and brute-force references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lowlabel.methods.densecl.losses import (
    dense_correspondence,
    dense_info_nce,
    densecl_loss,
    info_nce,
    queue_logsumexp,
)


def _unit(*shape: int, dim: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=dim)


@pytest.mark.parametrize(("n", "c", "k", "tau"), [(1, 4, 3, 0.2), (5, 8, 17, 0.07), (3, 16, 64, 1.0)])
def test_info_nce_matches_hand_computed_cross_entropy(n: int, c: int, k: int, tau: float) -> None:
    q, key, queue = _unit(n, c, dim=1, seed=1), _unit(n, c, dim=1, seed=2), _unit(c, k, dim=0, seed=3)
    expected = 0.0
    for i in range(n):  # -log softmax of the positive, written out term by term
        pos = math.exp(float(q[i] @ key[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / tau) for j in range(k))
        expected += -math.log(pos / (pos + neg))
    assert info_nce(q, key, queue, tau).item() == pytest.approx(expected / n, rel=1e-10)


def test_info_nce_analytic_value_and_float32() -> None:
    # q = k and queue orthogonal to q: logits [1/tau, 0, ..., 0] -> log(1 + K exp(-1/tau)).
    q = torch.zeros(2, 4)
    q[:, 0] = 1.0
    queue = torch.zeros(4, 10)
    queue[1] = 1.0
    tau = 0.2
    assert info_nce(q, q.clone(), queue, tau).item() == pytest.approx(math.log(1 + 10 * math.exp(-1 / tau)), rel=1e-5)


def test_info_nce_gradient_equals_cross_entropy_of_the_concatenated_logits() -> None:
    # the official head: CE([q.k, q.Q] / tau, target 0); a second formulation, compared in float64
    q, key, queue = _unit(6, 8, dim=1, seed=4), _unit(6, 8, dim=1, seed=5), _unit(8, 30, dim=0, seed=6)
    grads = []
    for loss_of in (lambda x: info_nce(x, key, queue, 0.07),
                    lambda x: F.cross_entropy(torch.cat([(x * key).sum(1, keepdim=True), x @ queue], 1) / 0.07,
                                              torch.zeros(6, dtype=torch.long))):
        x = q.clone().requires_grad_()
        loss_of(x).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_info_nce_sends_no_gradient_to_keys_or_queue() -> None:
    q = _unit(3, 8, dim=1, seed=4).requires_grad_(True)
    k = _unit(3, 8, dim=1, seed=5).requires_grad_(True)
    queue = _unit(8, 5, dim=0, seed=6).requires_grad_(True)
    info_nce(q, k, queue).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_random_queue_loss_is_near_log_queue_size() -> None:
    q, k, queue = _unit(64, 128, dim=1, seed=7), _unit(64, 128, dim=1, seed=8), _unit(128, 4096, dim=0, seed=9)
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(math.log(4097), rel=0.02)


def test_correspondence_identity_and_mirror_on_flipped_maps() -> None:
    B, C, S = 3, 32, 5
    f = torch.randn(B, C, S, S, generator=torch.Generator().manual_seed(0))
    same = dense_correspondence(f.flatten(2), f.flatten(2))
    assert same.dtype == torch.long and same.shape == (B, S * S)
    assert torch.equal(same, torch.arange(S * S).expand(B, -1))
    flipped = dense_correspondence(f.flatten(2), f.flip(-1).flatten(2))
    rows, cols = torch.div(torch.arange(S * S), S, rounding_mode="floor"), torch.arange(S * S) % S
    assert torch.equal(flipped, (rows * S + (S - 1 - cols)).expand(B, -1))


def test_correspondence_matches_brute_force_and_ignores_scale() -> None:
    g = torch.Generator().manual_seed(1)
    f_q, f_k = torch.randn(2, 6, 9, generator=g), torch.randn(2, 6, 9, generator=g)
    scale = torch.rand(2, 1, 9, generator=g) * 10 + 0.1  # per-location norms must not matter (cosine)
    got = dense_correspondence(f_q, f_k * scale)
    for b in range(2):
        for s in range(9):
            cos = [F.cosine_similarity(f_q[b, :, s], f_k[b, :, t], dim=0).item() for t in range(9)]
            assert got[b, s].item() == max(range(9), key=lambda t: cos[t])


def test_dense_info_nce_matches_per_location_loop() -> None:
    B, C, L, K, tau = 2, 8, 4, 6, 0.2
    r_q, r_k, queue = _unit(B, C, L, dim=1, seed=10), _unit(B, C, L, dim=1, seed=11), _unit(C, K, dim=0, seed=12)
    match = torch.randint(0, L, (B, L), generator=torch.Generator().manual_seed(13))
    terms = []
    for b in range(B):
        for s in range(L):
            pos = float(r_q[b, :, s] @ r_k[b, :, match[b, s]]) / tau
            negs = [float(r_q[b, :, s] @ queue[:, j]) / tau for j in range(K)]
            terms.append(math.log(math.exp(pos) + sum(math.exp(v) for v in negs)) - pos)
    assert dense_info_nce(r_q, r_k, match, queue, tau).item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)


def test_densecl_loss_weights_and_moco_mode() -> None:
    B, C, L, K = 3, 8, 4, 5
    g_q, g_k = _unit(B, C, dim=1, seed=20), _unit(B, C, dim=1, seed=21)
    r_q, r_k = _unit(B, C, L, dim=1, seed=22), _unit(B, C, L, dim=1, seed=23)
    q1, q2 = _unit(C, K, dim=0, seed=24), _unit(C, K, dim=0, seed=25)
    match = dense_correspondence(r_q, r_k)
    lq, lr = info_nce(g_q, g_k, q1), dense_info_nce(r_q, r_k, match, q2)
    out = densecl_loss(g_q, g_k, q1, r_q, r_k, match, q2, lam=0.3)
    assert out.single.item() == pytest.approx(0.7 * lq.item())
    assert out.dense.item() == pytest.approx(0.3 * lr.item())
    assert out.total.item() == pytest.approx(0.7 * lq.item() + 0.3 * lr.item())
    moco = densecl_loss(g_q, g_k, q1, lam=0.0)
    assert moco.total.item() == pytest.approx(lq.item()) and moco.dense.item() == 0.0
    with pytest.raises(ValueError, match="needs r_q"):
        densecl_loss(g_q, g_k, q1, lam=0.5)
    with pytest.raises(ValueError, match="lam"):
        densecl_loss(g_q, g_k, q1, r_q, r_k, match, q2, lam=1.5)


@pytest.mark.parametrize("scale", [1.0, 5.0, 40.0])  # at 40 the logits reach 1600: exp overflows, shifted path
def test_queue_logsumexp_value_and_gradient_equal_torch_logsumexp(scale: float) -> None:
    q, queue = scale * _unit(7, 16, dim=1, seed=10), scale * _unit(16, 300, dim=0, seed=11)
    results = []
    for lse_of in (queue_logsumexp, lambda x, Q: torch.logsumexp(x @ Q, dim=1)):
        x = q.clone().requires_grad_()
        weights = torch.arange(1.0, 8.0, dtype=torch.float64)  # a non-uniform upstream gradient
        value = lse_of(x, queue)
        (value * weights).sum().backward()
        results.append((value.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def test_queue_logsumexp_sums_in_float32_for_half_inputs() -> None:
    # 65,536 keys equal to q at 1/tau = 5: every logit is 5, the sum 65,536 e^5 ~ 9.7e6 overflows float16
    q = torch.zeros(2, 8, dtype=torch.float16)
    q[:, 0] = 5.0
    queue = torch.zeros(8, 65536, dtype=torch.float16)
    queue[0] = 1.0
    out = queue_logsumexp(q, queue)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2,), 5.0 + math.log(65536)), rtol=1e-6, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the product in bfloat16
        out = queue_logsumexp(q.float() * 1.01, queue.float())
    torch.testing.assert_close(out, torch.full((2,), 5.05 + math.log(65536)), rtol=1e-6, atol=1e-5)


def test_queue_logsumexp_when_every_exponential_underflows() -> None:
    # logits -200 + j: exp(-200) underflows float32, so the row-max shifted path must give the exact value
    q = torch.full((3, 1), -1.0, requires_grad=True)
    queue = 200.0 - torch.arange(4.0).unsqueeze(0)
    value = queue_logsumexp(q, queue)
    expected = -197.0 + math.log(sum(math.exp(-j) for j in range(4)))
    torch.testing.assert_close(value.detach(), torch.full((3,), expected), rtol=1e-6, atol=1e-4)
    value.sum().backward()
    softmax = torch.softmax(-queue[0], dim=0)
    torch.testing.assert_close(q.grad, (softmax * queue[0]).sum().expand(3, 1), rtol=1e-5, atol=1e-5)


def test_queue_logsumexp_runs_on_meta_tensors_for_flop_counting() -> None:
    q = torch.empty(6, 8, device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out = queue_logsumexp(q, torch.empty(8, 50, device="meta"))
        out.sum().backward()
    assert out.shape == (6,) and out.is_meta
    assert counter.get_total_flops() == 2 * (2 * 6 * 8 * 50)  # the forward and the backward product
