"""The model's configuration: ``LMConfig`` and one config class per mixer kind.

``LMConfig.mixer`` holds a mixer config (or one per layer): ``AttentionConfig``,
``ForgettingAttentionConfig`` ("fox"), ``GLAConfig`` or ``GatedDeltaNetConfig`` ("gdn"). Each
mixer config carries only the options of its kind and builds its layer (``MIXER_CONFIGS`` is the
registry that names them), so a GLA option can never be silently ignored by an attention layer.
A mixer may also be written as its name (``mixer="gla"``: that kind's defaults) or as a dict
``{"kind": "gla", "expand_k": 0.5}``. All configs are frozen and check themselves once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from selrope.common import (
    check_bool,
    check_choice,
    check_heads_divide,
    check_positive_float,
    check_positive_int,
    is_finite_number,
    setting,
)
from selrope.layers import (
    AlibiAttention,
    Attention,
    CopeAttention,
    CopeForgettingAttention,
    ForgettingAttention,
    GatedDeltaNet,
    GatedLinearAttention,
    PathAttention,
)
from selrope.layers.blocks import FORMS, head_widths
from selrope.layers.forgetting_attention import FORGET_BIAS_INIT
from selrope.layers.gla import DECAYS
from selrope.layers.mlp import MLPS
from selrope.layers.norm import NORMS

ROTARY_SOURCES = ("layer", "embedding")
# How the MLP inner width follows from mlp_ratio: "ratio" round(mlp_ratio * d); "two_thirds"
# the LLaMA / flash-linear-attention rule, 2/3 of that rounded up to a multiple of mlp_multiple_of
# (d 1,024, ratio 4: 2,816), which the papers' models use.
MLP_WIDTH_RULES = ("ratio", "two_thirds")
ABSOLUTE_POSITIONS = ("none", "sinusoidal", "learned")
MODEL_TYPE = "selrope"  # config.json names it so that transformers' AutoConfig finds hf.py


class MixerConfig:
    """What every mixer config has: its ``kind`` and a ``build`` of its layer."""

    kind: ClassVar[str]

    def layer_options(self) -> dict[str, Any]:
        """The layer's keyword arguments (every field of the config)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def build(self, model_dim: int, num_heads: int, rotary: dict[str, Any], norm_eps: float):
        raise NotImplementedError

    def check(self, model_dim: int, num_heads: int) -> None:
        """Checks that need the model's width and head count (none by default)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.layer_options()}


@dataclass(frozen=True)
class _SoftmaxAttentionConfig(MixerConfig):
    """Options shared by the softmax-attention mixers: a position mechanism inside the scores."""

    relative_positions: str = setting(
        "none",
        help="a position mechanism in the attention scores: none, alibi (fixed per-head distance "
        "slopes; attention only), cope (contextual positions) or path "
        "(accumulated Householder transforms: PaTH, PaTH-FoX with fox)",
    )
    cope_max_positions: int = setting(
        64, help="CoPE: rows of the position table; contextual positions clip at one less"
    )
    path_low_rank_dim: int = setting(32, help="PaTH: rank of the projection of its directions w")
    path_conv_size: int = setting(3, help="PaTH: kernel width of the short conv on w")
    bias: bool = setting(False, help="biases on the q, k, v and output projections (GPT-2's)")

    allowed_relative_positions: ClassVar[tuple[str, ...]] = ("none", "alibi", "cope", "path")

    def __post_init__(self) -> None:
        check_choice(
            f"relative_positions (of mixer {self.kind})",
            self.relative_positions,
            self.allowed_relative_positions,
        )
        check_positive_int("cope_max_positions", self.cope_max_positions)
        check_positive_int("path_low_rank_dim", self.path_low_rank_dim)
        check_positive_int("path_conv_size", self.path_conv_size)
        check_bool("bias", self.bias)

    def path_options(self) -> dict[str, Any]:
        """The :class:`PathAttention` keyword arguments of these options."""
        return {
            "low_rank_dim": self.path_low_rank_dim,
            "conv_size": self.path_conv_size,
            "bias": self.bias,
        }


@dataclass(frozen=True)
class AttentionConfig(_SoftmaxAttentionConfig):
    """Causal softmax attention; ALiBi, CoPE and PaTH attention through ``relative_positions``."""

    kind: ClassVar[str] = "attention"

    def build(self, model_dim: int, num_heads: int, rotary: dict[str, Any], norm_eps: float):
        if self.relative_positions == "alibi":
            return AlibiAttention(model_dim, num_heads, rotary, self.bias)
        if self.relative_positions == "cope":
            return CopeAttention(model_dim, num_heads, rotary, self.cope_max_positions, self.bias)
        if self.relative_positions == "path":
            return PathAttention(model_dim, num_heads, rotary, **self.path_options())
        return Attention(model_dim, num_heads, rotary, self.bias)


@dataclass(frozen=True)
class ForgettingAttentionConfig(_SoftmaxAttentionConfig):
    """The Forgetting Transformer (FoX): softmax attention with a per-head forget gate; CoPE and
    PaTH-FoX through ``relative_positions``."""

    kind: ClassVar[str] = "fox"
    forget_bias_init: float = setting(
        FORGET_BIAS_INIT,
        help="FoX forget-gate bias at initialisation (sigmoid(5) = 0.993: gates start near 1; "
        "the FoX paper's code starts at 0)",
    )

    # ALiBi is FoX with fixed gates.
    allowed_relative_positions: ClassVar[tuple[str, ...]] = ("none", "cope", "path")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_finite_number(self.forget_bias_init):
            raise ValueError(
                f"forget_bias_init must be a finite float; got {self.forget_bias_init!r}"
            )

    def build(self, model_dim: int, num_heads: int, rotary: dict[str, Any], norm_eps: float):
        if self.relative_positions == "cope":
            return CopeForgettingAttention(
                model_dim,
                num_heads,
                rotary,
                self.cope_max_positions,
                self.forget_bias_init,
                self.bias,
            )
        if self.relative_positions == "path":
            return PathAttention(
                model_dim,
                num_heads,
                rotary,
                **self.path_options(),
                forget_gate=True,
                forget_bias_init=self.forget_bias_init,
            )
        return ForgettingAttention(model_dim, num_heads, rotary, self.forget_bias_init, self.bias)


@dataclass(frozen=True)
class _RecurrentConfig(MixerConfig):
    """Options shared by the linear-recurrent mixers (GLA, Gated DeltaNet)."""

    expand_k: float = setting(1.0, help="q/k width as a multiple of d_model")
    expand_v: float = setting(1.0, help="v width as a multiple of d_model")
    use_short_conv: bool = setting(True, help="short causal convs on q, k and v")
    conv_size: int = setting(4, help="kernel width of the short convs")
    form: str = setting("chunk", help="chunked or recurrent (loop) kernels")
    chunk_size: int = setting(64, help="chunk length of the chunked kernels (a power of two)")

    def __post_init__(self) -> None:
        check_positive_float("expand_k", self.expand_k)
        check_positive_float("expand_v", self.expand_v)
        check_bool("use_short_conv", self.use_short_conv)
        check_positive_int("conv_size", self.conv_size)
        check_choice("form", self.form, FORMS)
        check_positive_int("chunk_size", self.chunk_size)
        if self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two; got {self.chunk_size}")

    def check(self, model_dim: int, num_heads: int) -> None:
        head_widths(model_dim, num_heads, self.expand_k, self.expand_v, self.form)


@dataclass(frozen=True)
class GLAConfig(_RecurrentConfig):
    """Gated Linear Attention: a per-key-channel data-dependent decay."""

    kind: ClassVar[str] = "gla"
    gate_low_rank_dim: int = setting(16, help="rank of the GLA forget-gate projection")
    gate_logit_normalizer: float = setting(16.0, help="divisor of the GLA forget-gate logits")
    tie_pair_decay: bool = setting(
        False, help="share decays within each rotation pair (an exact complex recurrence)"
    )
    decay: str = setting("learned", help="learned, or none (alpha = 1: linear attention)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("gate_low_rank_dim", self.gate_low_rank_dim)
        check_positive_float("gate_logit_normalizer", self.gate_logit_normalizer)
        check_bool("tie_pair_decay", self.tie_pair_decay)
        check_choice("decay", self.decay, DECAYS)

    def build(self, model_dim: int, num_heads: int, rotary: dict[str, Any], norm_eps: float):
        return GatedLinearAttention(
            model_dim, num_heads, rotary, norm_eps=norm_eps, **self.layer_options()
        )


@dataclass(frozen=True)
class GatedDeltaNetConfig(_RecurrentConfig):
    """Gated DeltaNet: the gated delta rule with a scalar per-head decay."""

    kind: ClassVar[str] = "gdn"

    def build(self, model_dim: int, num_heads: int, rotary: dict[str, Any], norm_eps: float):
        return GatedDeltaNet(
            model_dim, num_heads, rotary, norm_eps=norm_eps, **self.layer_options()
        )


MIXER_CONFIGS: dict[str, type[MixerConfig]] = {
    cls.kind: cls
    for cls in (AttentionConfig, ForgettingAttentionConfig, GLAConfig, GatedDeltaNetConfig)
}
"""The mixer configs by kind: the registry ``LMConfig.mixer`` names resolve through."""
MIXERS = tuple(MIXER_CONFIGS)
MixerSpec = MixerConfig | str | dict[str, Any]


def mixer_fields(kind: str) -> tuple[str, ...]:
    """The option names of mixer ``kind``."""
    return tuple(f.name for f in dataclasses.fields(MIXER_CONFIGS[kind]))


def as_mixer_config(value: MixerSpec) -> MixerConfig:
    """A mixer config from a config, a kind name, or a dict ``{"kind": ..., <options>}``.

    Raises:
        ValueError: an unknown kind, or an option that the kind does not have.
    """
    if isinstance(value, MixerConfig):
        return value
    options = dict(value) if isinstance(value, dict) else {"kind": value}
    kind = options.pop("kind", None)
    if kind not in MIXER_CONFIGS:
        raise ValueError(f"mixer must be one of {', '.join(MIXERS)}; got {kind!r}")
    unknown = sorted(set(options) - set(mixer_fields(kind)))
    if unknown:
        raise ValueError(
            f"mixer {kind!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(mixer_fields(kind)) or 'none'}"
        )
    return MIXER_CONFIGS[kind](**options)


@dataclass(frozen=True)
class LMConfig:
    """Every option of the language model (the mixer's own options live in its config)."""

    vocab_size: int = setting(required=True, help="number of tokens (set by the task)")
    d_model: int = setting(128, help="model width d")
    n_layers: int = setting(2, help="number of blocks")
    n_heads: int = setting(4, help="heads per mixer (must divide d_model)")
    mixer: MixerConfig | tuple[MixerConfig, ...] = setting(
        "gla",
        help="attention | fox (Forgetting Transformer) | gla | gdn for every layer, or one per "
        "layer (hybrids)",
    )
    rotary: dict[str, Any] = setting(
        default_factory=lambda: {"type": "nope"},
        help="rotary embedding config for selrope.rotary.build_rotary (same in every layer)",
    )
    rotary_source: str = setting(
        "layer",
        help="what the rotary embedding reads: layer (each mixer's normalised input) or "
        "embedding (the token embeddings, shared by all layers)",
    )
    absolute_position: str = setting(
        "none", help="none, sinusoidal or learned: an absolute position embedding (a baseline)"
    )
    max_positions: int = setting(4096, help="size of the learned position table")
    sinusoidal_scale: float | None = setting(
        None,
        help="factor on the sinusoidal position embedding; none: init_std, so positions and "
        "token embeddings have the same spread (the original Transformer's balance)",
    )
    norm: str = setting("rmsnorm", help="the block and final norms: rmsnorm or layernorm (GPT-2's)")
    mlp: str = setting(
        "swiglu", help="the MLP: swiglu (no biases) or gelu (GPT-2's: one hidden layer, biases)"
    )
    mlp_ratio: float = setting(4.0, help="MLP inner width / d_model; 0: no MLP sublayer")
    mlp_width_rule: str = setting(
        "ratio",
        help="ratio (inner width round(mlp_ratio x d)) or two_thirds (the LLaMA / fla rule: 2/3 "
        "of it, rounded up to a multiple of mlp_multiple_of)",
    )
    mlp_multiple_of: int = setting(256, help="the two_thirds rule rounds up to this multiple")
    norm_eps: float = setting(1e-6, help="the norms' epsilon")
    tie_embeddings: bool = setting(False, help="share the embedding and LM-head matrices")
    init_std: float = setting(
        0.02, help="std of the normal init of embeddings and the linear weights"
    )

    def __post_init__(self) -> None:
        # Normalise once (frozen: through object.__setattr__): the rotary config a plain dict
        # (JSON-serialisable), the mixer a config or a tuple of them.
        rotary = self.rotary
        rotary = dataclasses.asdict(rotary) if dataclasses.is_dataclass(rotary) else dict(rotary)
        object.__setattr__(self, "rotary", rotary)
        mixer = self.mixer
        if isinstance(mixer, (list, tuple)):
            mixer = tuple(as_mixer_config(m) for m in mixer)
        else:
            mixer = as_mixer_config(mixer)
        object.__setattr__(self, "mixer", mixer)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions"):
            check_positive_int(name, getattr(self, name))
        check_heads_divide("d_model", self.d_model, self.n_heads)
        if isinstance(self.mixer, tuple) and len(self.mixer) != self.n_layers:
            raise ValueError(
                f"mixer as a list needs one entry per layer (n_layers={self.n_layers}); "
                f"got {len(self.mixer)}"
            )
        check_choice("rotary_source", self.rotary_source, ROTARY_SOURCES)
        check_choice("absolute_position", self.absolute_position, ABSOLUTE_POSITIONS)
        check_positive_float("norm_eps", self.norm_eps)
        check_positive_float("init_std", self.init_std)
        if self.sinusoidal_scale is not None:
            check_positive_float("sinusoidal_scale", self.sinusoidal_scale)
        if not is_finite_number(self.mlp_ratio) or self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be a float >= 0; got {self.mlp_ratio!r}")
        check_bool("tie_embeddings", self.tie_embeddings)
        check_choice("mlp_width_rule", self.mlp_width_rule, MLP_WIDTH_RULES)
        check_choice("norm", self.norm, NORMS)
        check_choice("mlp", self.mlp, MLPS)
        check_positive_int("mlp_multiple_of", self.mlp_multiple_of)
        for mixer in self.layer_mixer_configs():
            mixer.check(self.d_model, self.n_heads)
        if self.rotary.get("type") == "pope":
            self._check_pope_mixers()

    def _check_pope_mixers(self) -> None:
        """PoPE's q and k are twice the head width: only the softmax-attention mixers without
        a table or transform of that width (CoPE, PaTH) take them."""
        for mixer in self.layer_mixer_configs():
            positions = getattr(mixer, "relative_positions", "none")
            if mixer.kind not in ("attention", "fox") or positions not in ("none", "alibi"):
                described = mixer.kind if positions == "none" else f"{mixer.kind} with {positions}"
                raise ValueError(
                    "rotary pope (q and k of twice the head width) needs mixer attention or fox "
                    f"(without cope or path); got {described}"
                )

    @property
    def mlp_hidden_size(self) -> int:
        """The MLP's inner width (0: no MLP sublayer), by ``mlp_width_rule``."""
        width = self.mlp_ratio * self.d_model
        if self.mlp_width_rule == "ratio" or width == 0:
            return round(width)
        multiple = self.mlp_multiple_of
        return multiple * -(-int(2 * width / 3) // multiple)

    def layer_mixer_configs(self) -> list[MixerConfig]:
        """The mixer config of each layer."""
        if isinstance(self.mixer, tuple):
            return list(self.mixer)
        return [self.mixer] * self.n_layers

    def layer_mixers(self) -> list[str]:
        """The mixer kind of each layer."""
        return [mixer.kind for mixer in self.layer_mixer_configs()]

    def build_mixer(self, layer: int) -> nn.Module:
        """The mixer layer of block ``layer``."""
        mixer = self.layer_mixer_configs()[layer]
        return mixer.build(self.d_model, self.n_heads, self.rotary, self.norm_eps)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; mixers as ``{"kind": ..., <options>}`` (a list for hybrids)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        mixers = self.mixer if isinstance(self.mixer, tuple) else None
        values["mixer"] = (
            [m.to_dict() for m in mixers] if mixers is not None else self.mixer.to_dict()
        )
        values["rotary"] = dict(self.rotary)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LMConfig:
        """The config of ``values`` (``to_dict`` output, or a config.json with ``"model_type":
        "selrope"``). Flat configs written before mixers had their own configs (``"mixer":
        "gla", "expand_k": 0.5, ...`` at the top) are read too: each such key goes to the
        mixers that have it; a config.json without ``sinusoidal_scale`` (written before it
        existed) keeps the unscaled sinusoids it was trained with. ValueError on unknown keys."""
        values = dict(values)
        if values.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {values['model_type']!r}")
        if values.pop("model_type", None) is not None:
            # A stored config.json written before sinusoidal_scale existed: its model was
            # trained with the sinusoids unscaled.
            values.setdefault("sinusoidal_scale", 1.0)
        known = {f.name for f in dataclasses.fields(cls)}
        flat_mixer_keys = {
            name for kind in MIXERS for name in mixer_fields(kind) if name in values
        } - known
        if flat_mixer_keys:
            flat = {name: values.pop(name) for name in flat_mixer_keys}
            values["mixer"] = _with_flat_options(values.get("mixer", "gla"), flat)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def _with_flat_options(mixer: Any, flat: dict[str, Any]) -> Any:
    """``mixer`` (a kind, a dict or a list of them) with each flat option given to the mixers
    whose kind has it (an old flat config.json stored every option for every kind)."""
    if isinstance(mixer, (list, tuple)):
        return [_with_flat_options(m, flat) for m in mixer]
    options = dict(mixer) if isinstance(mixer, dict) else {"kind": mixer}
    kind = options.get("kind")
    if kind in MIXER_CONFIGS:
        names = mixer_fields(kind)
        options.update({k: v for k, v in flat.items() if k in names and k not in options})
    return options
