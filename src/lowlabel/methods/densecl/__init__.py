"""DenseCL (Wang et al., CVPR 2021): MoCo-v2 plus a dense, pixel-level contrastive loss between two views.

Equations: losses.py; networks: model.py; data readers: data.py; recipe, demo and export: recipe.py, demo.py,
export.py; command line: cli.py. Spec: ../shared/specs/densecl.md; user guide: docs/methods/densecl.md.
"""
