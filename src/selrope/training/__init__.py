"""selrope.training: the trainer, its run folder, optimiser groups, schedule, checkpoints,
metrics and loggers, data-parallel processes."""

from .batches import DeterministicBatches
from .callbacks import Callback, MetricsFile, ProgressBar, TensorBoardLogger, WandbLogger
from .checkpoint import (
    atomic_write,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .distributed import World, init_distributed, is_main_process
from .errors import NonFiniteLossError, TrainingStoppedError
from .metrics import MetricsLog, evaluate, read_metrics, sequence_loss
from .optim import build_optimizer, lr_schedule, parameter_groups, wants_weight_decay
from .run_folder import RunFolder, Start
from .trainer import Trainer, TrainState, evaluate_tests, main_test_length, train

__all__ = [
    "Callback",
    "DeterministicBatches",
    "MetricsFile",
    "MetricsLog",
    "NonFiniteLossError",
    "ProgressBar",
    "RunFolder",
    "Start",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "TrainingStoppedError",
    "WandbLogger",
    "World",
    "atomic_write",
    "build_optimizer",
    "evaluate",
    "evaluate_tests",
    "init_distributed",
    "is_main_process",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "lr_schedule",
    "main_test_length",
    "parameter_groups",
    "read_metrics",
    "save_checkpoint",
    "save_weights",
    "sequence_loss",
    "train",
    "wants_weight_decay",
]
