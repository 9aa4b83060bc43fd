"""SGP: self-supervised geometric perception (robust-fitting teacher, descriptor-learning student; CVPR 2021)."""
