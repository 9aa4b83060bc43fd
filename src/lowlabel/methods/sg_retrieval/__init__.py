"""IRSGS (Yoon et al., AAAI 2021): image-to-image retrieval by learning similarity between scene graphs.

A graph network (IRSGS-GCN / IRSGS-GIN) maps a scene graph to a unit vector; it is trained so that the dot product
of two images' vectors regresses the similarity of their captions under a sentence encoder. Files: losses.py
(caption relevance, MSE), graphs.py (graph construction, packed batches), model.py, data.py (readers of the official
files, pair sampler), sources.py (a user's dataset folder or manifest, the shapes world), index.py (embedding,
exported model file, faiss index), evaluation.py (nDCG and triplet protocols), baselines.py (TF-IDF, WL kernel),
figures.py (retrieved-images figure), recipe.py (config, train, evaluate), demo.py, cli.py (`lowlabel sgr`).
"""
