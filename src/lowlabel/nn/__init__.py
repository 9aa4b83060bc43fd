"""Reusable networks: ResNet, V-Net, heads."""
