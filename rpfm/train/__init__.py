"""Training: ``Trainer(cfg).fit()`` / ``train(cfg)``, checkpoints with exact resume, torchrun DDP, export.

See ``rpfm.train.trainer`` (the step), ``checkpoint`` (layout and guarantees), ``distributed`` (torchrun
commands), ``data`` (item contract and registry) and ``config`` (every setting).
"""
from .checkpoint import CheckpointError, export_pipeline, find_latest, load_checkpoint
from .config import TrainConfig, from_dict, load_config
from .data import TensorPairDataset, build_dataset, register_dataset
from .ema import EMA
from .trainer import NonFiniteLossError, Trainer, TrainResult, train

__all__ = ["Trainer", "TrainConfig", "TrainResult", "train", "from_dict", "load_config", "EMA",
           "TensorPairDataset", "build_dataset", "register_dataset", "export_pipeline", "load_checkpoint",
           "find_latest", "CheckpointError", "NonFiniteLossError"]
