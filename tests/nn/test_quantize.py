"""VisualDictionary against brute-force assignment, a scalar-loop moving-average reference and autograd identities."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lowlabel.nn.quantize import VisualDictionary, code_usage, constant_decay, ramped_decay


def nearest_brute_force(x: list[list[float]], codes: list[list[float]]) -> list[int]:
    out = []
    for row in x:
        dists = [sum((a - b) ** 2 for a, b in zip(row, code, strict=True)) for code in codes]
        out.append(min(range(len(codes)), key=lambda j: (dists[j], j)))
    return out


def close(tensor: torch.Tensor, expected: list, tol: float = 1e-12) -> bool:
    return torch.allclose(tensor.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=tol)


def ema_reference(codes, size, avg, x, decay, eps=1e-5):
    """One official update step in Python scalars: returns (assignments, new codes, new size, new avg)."""
    k, dim = len(codes), len(codes[0])
    idx = nearest_brute_force(x, codes)
    counts = [sum(1 for i in idx if i == j) for j in range(k)]
    sums = [[sum(x[n][c] for n in range(len(x)) if idx[n] == j) for c in range(dim)] for j in range(k)]
    size = [decay * size[j] + (1 - decay) * counts[j] for j in range(k)]
    avg = [[decay * avg[j][c] + (1 - decay) * sums[j][c] for c in range(dim)] for j in range(k)]
    m = sum(size)
    smoothed = [(size[j] + eps) / (m + k * eps) * m for j in range(k)]
    codes = [[avg[j][c] / smoothed[j] for c in range(dim)] for j in range(k)]
    return idx, codes, size, avg


@pytest.mark.parametrize(("n", "k", "dim"), [(7, 3, 2), (50, 16, 8), (200, 64, 5)])
def test_assignment_is_the_nearest_code(n: int, k: int, dim: int) -> None:
    g = torch.Generator().manual_seed(n)
    vd = VisualDictionary(k, dim, 0.4, generator=g).eval()
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * 1.5
    _, idx = vd(x)
    assert idx.tolist() == nearest_brute_force(x.tolist(), vd.embed.double().tolist())


def test_ties_go_to_the_lowest_index() -> None:
    vd = VisualDictionary(3, 2, 0.4, embed=torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])).eval()
    _, idx = vd(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]))
    assert idx.tolist() == [0, 0, 0]


def test_initial_state_and_explicit_generator() -> None:
    state = torch.random.get_rng_state()
    a = VisualDictionary(5, 4, 0.4, generator=torch.Generator().manual_seed(3))
    b = VisualDictionary(5, 4, 0.4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is not used
    assert torch.equal(a.embed, b.embed) and a.embed.std() > 0.3
    assert torch.equal(a.cluster_size, torch.zeros(5)) and torch.equal(a.embed_avg, torch.zeros(5, 4))
    given = torch.arange(8.0).view(2, 4)
    assert torch.equal(VisualDictionary(2, 4, 0.4, embed=given).embed, given)
    assert set(a.state_dict()) == {"embed", "cluster_size", "embed_avg", "cluster_sum"}
    with pytest.raises(ValueError, match="shape"):
        VisualDictionary(3, 4, 0.4, embed=given)


def test_moving_average_update_over_two_steps_by_hand() -> None:
    codes = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    vd = VisualDictionary(3, 2, 0.4, embed=torch.tensor(codes, dtype=torch.float64)).train()
    vd.double()
    x1 = [[0.9, 0.1], [1.1, -0.1], [0.1, 0.2]]
    q1, idx1 = vd(torch.tensor(x1, dtype=torch.float64))
    ref_idx, ref_codes, size, avg = ema_reference(codes, [0.0] * 3, [[0.0, 0.0]] * 3, x1, 0.4)
    assert idx1.tolist() == ref_idx == [1, 1, 0]
    assert vd.cluster_size.tolist() == pytest.approx([0.6, 1.2, 0.0], abs=1e-12)
    assert close(vd.embed, ref_codes)
    # hand values: code 0 holds the mean of its one row (up to the eps smoothing), code 2 got nothing -> zero
    assert vd.embed[0].tolist() == pytest.approx([0.1, 0.2], abs=1e-4)
    assert vd.embed[1].tolist() == pytest.approx([1.0, 0.0], abs=1e-4)
    assert vd.embed[2].tolist() == [0.0, 0.0]
    assert close(q1, [ref_codes[i] for i in ref_idx])  # post-update dictionary
    # step 2 with another decay passed in (a schedule value): the zeroed code now attracts a low-norm row
    x2 = [[0.0, 0.05], [1.0, 0.0], [0.12, 0.18]]
    _, idx2 = vd(torch.tensor(x2, dtype=torch.float64), decay=0.8)
    ref_idx2, ref_codes2, size2, avg2 = ema_reference(ref_codes, size, avg, x2, 0.8)
    assert idx2.tolist() == ref_idx2 == [2, 1, 0]
    assert vd.cluster_size.tolist() == pytest.approx(size2, abs=1e-12)
    assert close(vd.embed_avg, avg2)
    assert close(vd.embed, ref_codes2)
    assert vd.cluster_sum.tolist() == [2.0, 3.0, 1.0]


def test_eval_mode_leaves_the_dictionary_alone() -> None:
    vd = VisualDictionary(4, 3, 0.4, generator=torch.Generator().manual_seed(0)).eval()
    before = {k: v.clone() for k, v in vd.state_dict().items()}
    x = torch.randn(10, 3)
    q, idx = vd(x)
    assert all(torch.equal(before[k], v) for k, v in vd.state_dict().items())
    assert torch.allclose(q, vd.embed[idx], atol=1e-6)


def test_straight_through_gradient_reaches_the_cnn() -> None:
    g = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(3, 6, 3)
    vd = VisualDictionary(8, 6, 0.4, generator=g).train()
    images = torch.randn(2, 3, 7, 7, generator=g)
    weights = torch.randn(2 * 5 * 5, 6, generator=g)
    feats = conv(images).permute(0, 2, 3, 1).reshape(-1, 6)
    q, _ = vd(feats)
    (q * weights).sum().backward()
    via_quantizer = conv.weight.grad.clone()
    conv.zero_grad()
    (conv(images).permute(0, 2, 3, 1).reshape(-1, 6) * weights).sum().backward()
    assert via_quantizer.abs().sum() > 0
    assert torch.allclose(via_quantizer, conv.weight.grad, atol=1e-5)  # d q / d x is the identity
    assert not vd.embed.requires_grad


def test_schedules_are_pure_functions_of_the_step() -> None:
    assert [constant_decay(s) for s in (0, 1, 10**6)] == [0.4, 0.4, 0.4]
    assert [ramped_decay(s) for s in (0, 1, 2, 3, 100)] == pytest.approx([0.0, 0.4, 0.8, 0.99, 0.99])
    vd = VisualDictionary(2, 2, 0.4)
    vd.decay = ramped_decay(2)
    assert vd.decay == pytest.approx(0.8)


def test_code_usage() -> None:
    assert code_usage(torch.arange(8), 16) == (8, pytest.approx(8.0))
    assert code_usage(torch.zeros(5, dtype=torch.long), 4) == (1, pytest.approx(1.0))
    p = [0.5, 0.25, 0.25]
    assert code_usage(torch.tensor([0, 0, 1, 2]), 3)[1] == pytest.approx(math.exp(-sum(v * math.log(v) for v in p)))


def test_bad_input() -> None:
    vd = VisualDictionary(4, 3, 0.4)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        vd(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no feature"):
        vd(torch.zeros(0, 3))


def _ddp_worker(rank: int, port: int, x: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        vd = VisualDictionary(6, 3, 0.4, generator=torch.Generator().manual_seed(0)).train()
        half = x.shape[0] // 2
        for _ in range(2):
            vd(x[rank * half : (rank + 1) * half])
        out[rank] = vd.embed.clone()
    finally:
        dist.destroy_process_group()


def test_ddp_update_equals_the_single_process_update_on_the_whole_batch() -> None:
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(5))
    single = VisualDictionary(6, 3, 0.4, generator=torch.Generator().manual_seed(0)).train()
    for _ in range(2):
        single(x)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.start_processes(_ddp_worker, args=(port, x, shared), nprocs=2, join=True, start_method="fork")
        out = dict(shared)
    assert torch.allclose(out[0], single.embed, atol=1e-6) and torch.allclose(out[1], single.embed, atol=1e-6)
