"""The DTC network: the shared V-Net of `lowlabel.nn.vnet` (spec "Architecture") with one input channel and its two
1x1x1 heads, the tanh level-set regression z and the segmentation logits; DTC adds nothing to the network itself.
Its losses (spec "Losses") tie the two heads together: see `losses.py`."""

from __future__ import annotations

from lowlabel.nn.vnet import VNet


def dtc_vnet(*, n_filters: int = 16, dropout: bool = True) -> VNet:
    """The official `VNet(n_channels=1, n_classes=1, normalization='batchnorm', has_dropout=True)` of
    `train_la_dtc.py`: 9,448,866 parameters at the official n_filters = 16."""
    return VNet(n_filters=n_filters, dropout=dropout)
