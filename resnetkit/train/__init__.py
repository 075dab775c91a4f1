"""Training: configs, the engine, checkpoints, metrics, distributed helpers."""
