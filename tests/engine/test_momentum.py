from __future__ import annotations

import torch
from torch import nn

from lowlabel.engine.momentum import FeatureQueue, MomentumEncoder


def test_momentum_update_is_the_ema_and_copy_is_frozen():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = MomentumEncoder(online)
    assert all(not p.requires_grad for p in ema.parameters())
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema.update(online, 0.9)
    for b, o, e in zip(before, online.parameters(), ema.module.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * o)


def test_momentum_keeps_its_own_buffers():
    online = nn.BatchNorm1d(2)
    ema = MomentumEncoder(online)
    online.train()
    online(torch.randn(8, 2) + 5)
    ema.update(online, 0.5)
    assert torch.equal(ema.module.running_mean, torch.zeros(2))


def test_queue_holds_last_k_in_order_and_wraps():
    q = FeatureQueue(dim=2, size=5)
    keys = torch.arange(16.0).reshape(8, 2)
    q.enqueue(keys[:3])
    q.enqueue(keys[3:7])  # wraps: 7 keys into 5 slots
    assert torch.equal(q.ordered().T, keys[2:7])
    assert int(q.ptr) == 2
    q.enqueue(torch.arange(20.0).reshape(10, 2))  # more keys than slots: the last 5 survive
    assert torch.equal(q.ordered().T, torch.arange(20.0).reshape(10, 2)[5:])


def test_queue_is_checkpointed_as_buffers():
    q = FeatureQueue(dim=3, size=4)
    q.enqueue(torch.ones(2, 3))
    other = FeatureQueue(dim=3, size=4)
    other.load_state_dict(q.state_dict())
    assert torch.equal(other.features, q.features) and int(other.ptr) == 2
