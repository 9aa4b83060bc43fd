"""COMPLETER (Lin et al., CVPR 2021): incomplete multi-view clustering via contrastive prediction.

Files: losses.py (the three terms), model.py (per-view autoencoders + cross-view predictors), data.py (the official
.mat layouts, input and mask checks, the synthetic two-view digits world), recipe.py (Config, training through the
engine, imputation, k-means, evaluate, smoke case), demo.py (digits world vs two k-means baselines), sweep.py (the
paper's protocol over missing rates and mask seeds), plots.py (t-SNE and sweep figures), cli.py
(`lowlabel completer cluster`). See docs/methods/completer.md.
"""
