"""Dynamic metric learning (DyML, CVPR 2021): one embedding for several semantic scales, trained with CSL."""
