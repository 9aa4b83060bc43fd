"""SDD-FIQA (Ou et al., CVPR 2021): unsupervised face image quality from the distance between a face's same-identity
and other-identity similarity distributions, a regressor trained on those pseudo-labels, and error-versus-reject
evaluation. See docs/methods/sdd_fiqa.md."""
