"""selrope.training: optimiser groups, schedule, loop, checkpoints, metrics, results."""

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
from .loop import (
    DeterministicBatches,
    NonFiniteLossError,
    TrainingStoppedError,
    evaluate_tests,
    main_test_length,
    train,
)
from .metrics import MetricsLog, evaluate, read_metrics, sequence_loss
from .optim import build_optimizer, lr_schedule, parameter_groups, wants_weight_decay
from .parallel import run_parallel
from .results import format_table, write_results

__all__ = [
    "DeterministicBatches",
    "MetricsLog",
    "NonFiniteLossError",
    "TrainingStoppedError",
    "TrainConfig",
    "World",
    "atomic_write",
    "build_optimizer",
    "evaluate",
    "evaluate_tests",
    "format_table",
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
    "run_parallel",
    "save_checkpoint",
    "save_weights",
    "sequence_loss",
    "train",
    "wants_weight_decay",
    "write_results",
]
