"""Data: procedural worlds with exact ground truth, tensor transforms, and file reading with clear errors."""
