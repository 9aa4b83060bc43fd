"""Weakly supervised phrase grounding by contrastive knowledge distillation (Wang et al., CVPR 2021)."""
