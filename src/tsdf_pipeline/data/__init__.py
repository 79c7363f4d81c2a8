"""data (core layer: torch/numpy/pillow only)."""
