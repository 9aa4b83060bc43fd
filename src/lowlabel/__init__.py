"""lowlabel: eleven 2021 computer-vision methods for learning with few or no labels."""

__version__ = "0.1.0"
