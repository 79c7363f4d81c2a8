"""defense (core layer: torch/numpy/pillow only)."""
