"""Reusable networks: ResNet, MobileNetV2 (ImageNet-pretrained, offline), V-Net, heads."""
