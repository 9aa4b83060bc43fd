"""ACR: adaptive knowledge (AKC) and representation (ARC) consistency for semi-supervised transfer learning."""
