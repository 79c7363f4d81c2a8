"""Face-editing generators in their official layouts (core layer: torch only).

``build_generator`` / ``load_generator`` by architecture name (``ARCHS``); checkpoints are read with
``weights_only=True`` and loaded strictly (see ``checkpoints``).
"""

from tsdf_pipeline.models.checkpoints import CheckpointError, save_generator
from tsdf_pipeline.models.registry import (
    ARCHS,
    build_discriminator,
    build_generator,
    default_config,
    load_discriminator,
    load_generator,
)

__all__ = [
    "ARCHS",
    "CheckpointError",
    "build_discriminator",
    "build_generator",
    "default_config",
    "load_discriminator",
    "load_generator",
    "save_generator",
]
