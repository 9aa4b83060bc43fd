"""DTC: semi-supervised 3D segmentation through dual-task consistency (Luo et al., AAAI 2021).

A V-Net with a segmentation head and a level-set (signed distance) head; the level set, turned into a mask by
sigmoid(-k z), must agree with the segmentation on labelled and unlabelled volumes. See docs/methods/dtc.md.
"""
