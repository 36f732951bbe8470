"""What the trainer reports, and to whom: callbacks for the progress bar and each logger.

The trainer calls, on rank 0 only:

    on_start(state)                 once, after the run folder is set up (fresh or resumed)
    on_log(row)                     a training row every ``log_every`` steps (``METRIC_COLUMNS``)
    on_evaluate(step, results)      after each evaluation: {length: {"loss", "perplexity", ...}}
    on_end(final)                   once, with what ``train`` returns

``build_loggers`` makes the ones a run asks for: ``metrics`` (always: metrics.jsonl / .csv),
``progress`` (a tqdm bar), ``tensorboard`` (``torch.utils.tensorboard``; the ``log`` extra) and
``wandb`` (Weights & Biases in offline mode: no network; the ``log`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .metrics import METRIC_COLUMNS, MetricsLog

LOGGERS = ("tensorboard", "wandb")
# The training-row values that the scalar loggers (TensorBoard, W&B) record, by their tag.
SCALARS = {
    "train/loss": "loss",
    "train/lr": "lr",
    "train/grad_norm": "grad_norm",
    "train/tokens_per_s": "tokens_per_s",
    "train/token_accuracy": "token_accuracy",
    "train/mfu": "mfu",
}


class Callback:
    """A no-op for every event; subclasses override the ones they need."""

    def on_start(self, step: int) -> None: ...

    def on_log(self, row: dict[str, Any]) -> None: ...

    def on_evaluate(self, step: int, results: dict[int, dict[str, Any]]) -> None: ...

    def on_end(self, final: dict[str, Any]) -> None: ...


def test_rows(step: int, results: dict[int, dict[str, Any]], extra: dict[str, Any]):
    """One metrics row per evaluated length."""
    for length, result in results.items():
        yield {
            "step": step,
            "split": "test",
            "length": length,
            **{key: result[key] for key in ("loss", "perplexity")},
            **{key: result[key] for key in ("token_accuracy", "sequence_accuracy")},
            **extra,
        }


class MetricsFile(Callback):
    """``metrics.jsonl`` and ``metrics.csv`` in the run folder; on resume, the rows logged after
    the checkpoint's step are dropped first (they belong to a lost future)."""

    def __init__(self, out_dir: Path, resumed: bool):
        self.log = MetricsLog(out_dir)
        self.resumed = resumed
        self.last_row: dict[str, Any] = {}

    def on_start(self, step: int) -> None:
        if self.resumed:
            self.log.truncate_after(step)

    def on_log(self, row: dict[str, Any]) -> None:
        self.last_row = row
        self.log.append({key: value for key, value in row.items() if key in METRIC_COLUMNS})

    def on_evaluate(self, step: int, results: dict[int, dict[str, Any]]) -> None:
        extra = {key: self.last_row.get(key) for key in ("lr", "elapsed_s")}
        for row in test_rows(step, results, extra):
            self.log.append(row)


class ProgressBar(Callback):
    """A tqdm bar with loss, lr and tokens/s, and the headline metric at the main test length
    (perplexity for free text, sequence accuracy otherwise)."""

    def __init__(self, total: int, headline: str, main_length: int | None):
        self.total = total
        self.headline = headline
        self.main_length = main_length
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}

    def on_start(self, step: int) -> None:
        self.bar = tqdm(total=self.total, initial=step, dynamic_ncols=True)

    def on_log(self, row: dict[str, Any]) -> None:
        self.bar.n = row["step"]
        self.postfix.update(
            loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:,.0f}"
        )
        if "mfu" in row:
            self.postfix["mfu"] = f"{row['mfu']:.1%}"
        self.bar.set_postfix(self.postfix)

    def on_evaluate(self, step: int, results: dict[int, dict[str, Any]]) -> None:
        self.bar.n = step
        main = results[self.main_length]
        if self.headline == "perplexity":
            self.postfix[f"ppl@{self.main_length}"] = f"{main['perplexity']:.2f}"
        else:
            self.postfix[f"acc@{self.main_length}"] = f"{main['sequence_accuracy']:.3f}"
        self.bar.set_postfix(self.postfix)
        summary = "  ".join(
            f"{n}: loss {r['loss']:.4f} (ppl {r['perplexity']:.2f}), "
            f"sequence accuracy {r['sequence_accuracy']:.3f}"
            for n, r in results.items()
        )
        self.bar.write(f"step {step}: by test length  {summary}")

    def on_end(self, final: dict[str, Any]) -> None:
        self.bar.n = final["step"]
        self.bar.close()


class TensorBoardLogger(Callback):
    """Scalars in ``<run>/tensorboard/`` (``SCALARS`` per training row, loss / perplexity /
    accuracies per test length)."""

    def __init__(self, out_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "--log tensorboard needs the tensorboard package (pip install 'selrope[log]')"
            ) from None
        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def on_log(self, row: dict[str, Any]) -> None:
        for tag, key in SCALARS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], row["step"])

    def on_evaluate(self, step: int, results: dict[int, dict[str, Any]]) -> None:
        for length, result in results.items():
            for key in ("loss", "perplexity", "token_accuracy", "sequence_accuracy"):
                self.writer.add_scalar(f"test_{length}/{key}", result[key], step)
        self.writer.flush()

    def on_end(self, final: dict[str, Any]) -> None:
        self.writer.close()


class WandbLogger(Callback):
    """A Weights & Biases run in offline mode under ``<run>/wandb/`` (sync it later with
    ``wandb sync``); the run's config is recorded with it."""

    def __init__(self, out_dir: Path, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ValueError(
                "--log wandb needs the wandb package (pip install 'selrope[log]')"
            ) from None
        os.environ.setdefault("WANDB_SILENT", "true")
        (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode="offline", dir=str(out_dir), config=config, name=out_dir.name, reinit=True
        )

    def on_log(self, row: dict[str, Any]) -> None:
        values = {tag: row[key] for tag, key in SCALARS.items() if row.get(key) is not None}
        self.run.log(values, step=row["step"])

    def on_evaluate(self, step: int, results: dict[int, dict[str, Any]]) -> None:
        values = {
            f"test_{length}/{key}": result[key]
            for length, result in results.items()
            for key in ("loss", "perplexity", "sequence_accuracy")
        }
        self.run.log(values, step=step)

    def on_end(self, final: dict[str, Any]) -> None:
        self.run.finish()


def build_loggers(
    names: tuple[str, ...] | list[str], out_dir: Path, config: dict[str, Any]
) -> list[Callback]:
    """The callbacks of the loggers ``names`` (each one of ``LOGGERS``)."""
    unknown = sorted(set(names) - set(LOGGERS))
    if unknown:
        raise ValueError(f"log must name loggers among {', '.join(LOGGERS)}; got {unknown}")
    loggers: list[Callback] = []
    if "tensorboard" in names:
        loggers.append(TensorBoardLogger(out_dir))
    if "wandb" in names:
        loggers.append(WandbLogger(out_dir, config))
    return loggers
