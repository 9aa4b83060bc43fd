"""IRSGS (Yoon et al., AAAI 2021): image-to-image retrieval by learning similarity between scene graphs.

A graph network (IRSGS-GCN / IRSGS-GIN) maps a scene graph to a unit vector; it is trained so that the dot product
of two images' vectors regresses the similarity of their captions under a sentence encoder. Files: losses.py
(caption relevance, MSE), graphs.py (graph construction, packed batches), model.py, data.py (readers, the official
folder and shapes-world sources, pair sampler), index.py (embedding, exported model file, faiss index), evaluation.py
(the demo's protocol), recipe.py (config, train, evaluate), demo.py, cli.py (`lowlabel sgr index|query`).
"""
