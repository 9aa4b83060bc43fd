"""FDRL: facial expression recognition by feature decomposition and reconstruction (Ruan et al., CVPR 2021)."""
