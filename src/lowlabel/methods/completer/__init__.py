"""COMPLETER (Lin et al., CVPR 2021): incomplete multi-view clustering via contrastive prediction.

Files: losses.py (the three terms), model.py (per-view autoencoders + cross-view predictors), data.py (the official
.mat layouts and the synthetic two-view digits world), recipe.py (training, imputation, k-means), cli.py
(`lowlabel completer cluster`). See docs/methods/completer.md.
"""
