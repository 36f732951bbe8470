"""How a training run that has begun can stop: ``TrainingStoppedError`` and its subclass for a
non-finite loss, gradient norm or parameter (the CLI exits with status 1, not 2: not a usage
error; the run folder and its last good checkpoint are kept)."""

from __future__ import annotations

from pathlib import Path


def _last_checkpoint(checkpoint: Path | None) -> str:
    return f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"


class TrainingStoppedError(RuntimeError):
    """Training stopped after its run folder was written; the last good checkpoint is kept."""

    def __init__(self, step: int, reason: str, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        self._arguments: tuple = (step, reason, checkpoint)
        super().__init__(
            f"training stopped at step {step}: {reason} ({_last_checkpoint(checkpoint)})"
        )

    def __reduce__(self):
        # Rebuilt from the constructor's arguments, not the message, so that the error crosses
        # the process pool of `run_parallel` (compare, the demo) intact.
        return type(self), self._arguments


class NonFiniteLossError(TrainingStoppedError):
    """The loss, the gradient norm or (after an update) a parameter became NaN/inf."""

    def __init__(self, step: int, what: str, value: float, checkpoint: Path | None):
        self.what = what
        self.value = value
        super().__init__(step, f"non-finite {what} ({value})", checkpoint)
        self._arguments = (step, what, value, checkpoint)
