from __future__ import annotations

import pytest
import torch

from lowlabel.nn.resnet import resnet18, resnet50


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_torchvision_published_numbers():
    assert n_params(resnet18()) == 11_689_512
    assert n_params(resnet50()) == 25_557_032


def test_state_dict_keys_follow_torchvision_names():
    keys = set(resnet50().state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer4.2.bn3.bias", "fc.weight", "fc.bias"):
        assert key in keys
    keys18 = set(resnet18().state_dict())
    assert "layer1.0.downsample.0.weight" not in keys18 and "layer2.0.downsample.0.weight" in keys18
    assert len(keys18) == 122 and len(keys) == 320  # torchvision: 122 and 320 entries (params + buffers)


def test_feature_maps_and_headless_output():
    x = torch.randn(2, 3, 64, 64)
    net = resnet18(num_classes=0).eval()
    assert net.forward_features(x).shape == (2, 512, 2, 2)
    assert net(x).shape == (2, 512)
    small = resnet18(num_classes=0, small_stem=True).eval()
    assert small.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)


def test_strict_load_across_instances_and_small_stem_mismatch():
    src = resnet18()
    resnet18().load_state_dict(src.state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        resnet18(small_stem=True).load_state_dict(src.state_dict(), strict=True)


def test_width_scales_every_stage_and_keeps_key_names():
    narrow = resnet18(num_classes=0, width=16, small_stem=True)
    assert narrow.feature_dim == 128
    assert narrow.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 128, 2, 2)
    assert set(narrow.state_dict()) == set(resnet18(num_classes=0, small_stem=True).state_dict())
    assert resnet50(num_classes=0, width=8).feature_dim == 256
