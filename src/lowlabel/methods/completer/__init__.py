"""COMPLETER (Lin et al., CVPR 2021): incomplete multi-view clustering via contrastive prediction.

Files: losses.py (the three terms), model.py (per-view autoencoders + cross-view predictors), data.py (the official
.mat layouts and the generic one for your own files, input and mask checks, the synthetic two-view digits world),
matfile.py (.mat parsing that survives a crashing parser), recipe.py (Config, training through the engine,
imputation, k-means, evaluate, smoke case), baselines.py (k-means, spectral and CCA baselines), demo.py (digits
world vs the baselines on paired seeds, the tuning grid), sweep.py (the paper's protocol over missing rates and mask
seeds, resumable), plots.py (t-SNE and sweep figures), cli.py (`lowlabel completer cluster`).
See docs/methods/completer.md.
"""
