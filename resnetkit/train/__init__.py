"""Training: frozen configs filled from recipes, the engine (``fit``), checkpoints, metrics, torchrun/DDP."""

from .config import TrainConfig, load_config
from .engine import fit

__all__ = ["TrainConfig", "fit", "load_config"]
