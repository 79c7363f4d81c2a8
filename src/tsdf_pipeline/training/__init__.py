"""training (core layer: torch/numpy/pillow only)."""
