"""The decoder language model and its configuration."""

from selrope.models.config import (
    MIXER_CONFIGS,
    AttentionConfig,
    ForgettingAttentionConfig,
    GatedDeltaNetConfig,
    GLAConfig,
    MixerConfig,
    as_mixer_config,
)
from selrope.models.lm import LanguageModel, LMConfig, ModelCache, lm_loss, parameter_count

__all__ = [
    "MIXER_CONFIGS",
    "AttentionConfig",
    "ForgettingAttentionConfig",
    "GLAConfig",
    "GatedDeltaNetConfig",
    "LMConfig",
    "LanguageModel",
    "MixerConfig",
    "ModelCache",
    "as_mixer_config",
    "lm_loss",
    "parameter_count",
]
