"""SOHO: end-to-end vision-language pre-training with a Visual Dictionary (Huang et al., CVPR 2021)."""
