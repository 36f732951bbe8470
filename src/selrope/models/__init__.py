"""The decoder language model and its configuration."""

from selrope.models.lm import (
    LanguageModel,
    LMConfig,
    ModelCache,
    build_mixer,
    lm_loss,
    parameter_count,
)

__all__ = [
    "LMConfig",
    "LanguageModel",
    "ModelCache",
    "build_mixer",
    "lm_loss",
    "parameter_count",
]
