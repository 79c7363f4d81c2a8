"""Perturbation methods (core layer: torch/numpy/pillow only).

TSDF stage 1 (``interruption``) and the baselines CMUA-Watermark (``cmua``), per-image PGD of Ruiz et al.
(``pgd``) and the uniform-noise control (``noise``), behind ``make_perturbation(method, ...)``.
"""

from tsdf_pipeline.defense.cmua import CMUAConfig, run_cmua
from tsdf_pipeline.defense.interruption import InterruptionConfig, InterruptionResult, run_interruption
from tsdf_pipeline.defense.methods import METHODS, Perturbation, make_config, make_perturbation
from tsdf_pipeline.defense.noise import NoiseConfig, uniform_noise
from tsdf_pipeline.defense.pgd import PGDConfig, run_pgd

__all__ = [
    "METHODS",
    "CMUAConfig",
    "InterruptionConfig",
    "InterruptionResult",
    "NoiseConfig",
    "PGDConfig",
    "Perturbation",
    "make_config",
    "make_perturbation",
    "run_cmua",
    "run_interruption",
    "run_pgd",
    "uniform_noise",
]
