"""ResNet-18/50 whose state-dict keys equal torchvision's, with an optional small-image stem."""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3, as torchvision (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-compatible ResNet. `num_classes=0` drops the classifier (`fc` becomes Identity, no keys).

    `small_stem` replaces the 7x7/2 conv + max-pool by a 3x3/1 conv and no pool (for 32-64 px images); its conv1
    weight then has another shape, so a torchvision checkpoint loads into it only with strict=False.
    `width` scales every stage (width, 2, 4, 8 x width channels; torchvision's layout is width 64): narrow networks
    for CPU demos keep the same key names.
    `forward_features` returns the last feature map (B, C, H/32, W/32) (H/8 with the small stem).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int = 1000,
        small_stem: bool = False,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"ResNet width must be positive, got {width}")
        self.inplanes = width
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 8 * width * block.expansion
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """Last feature map (B, feature_dim, h, w)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes), or pooled features (B, feature_dim) when `num_classes=0`."""
        return self.fc(self.avgpool(self.forward_features(x)).flatten(1))


def resnet18(**kwargs: object) -> ResNet:
    """ResNet-18 (11,689,512 parameters with the 1000-class head, as torchvision)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)  # type: ignore[arg-type]


def resnet50(**kwargs: object) -> ResNet:
    """ResNet-50 (25,557,032 parameters with the 1000-class head, as torchvision)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)  # type: ignore[arg-type]


ARCHS = {"resnet18": resnet18, "resnet50": resnet50}
