"""Rotary configs: one small JSON-serialisable dataclass per embedding type, and named presets.

``dataclasses.asdict(config)`` gives a plain dict (with its ``type``) that
``parse_rotary_config`` / ``build_rotary`` turn back into the same config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from selrope.common import is_finite_number, is_int


def _check_choice(owner: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
        raise ValueError(f"{owner}.{name} must be one of {allowed}; got {value!r}")


def _check_number(
    owner: str, name: str, value: Any, condition: str, ok: Callable[[Any], bool]
) -> None:
    if not is_finite_number(value) or not ok(value):
        raise ValueError(f"{owner}.{name} must be a number {condition}; got {value!r}")


def _positive_int(value: Any) -> bool:
    return is_int(value) and value >= 1


@dataclass(frozen=True)
class NoPEConfig:
    """No position encoding."""

    type: Literal["nope"] = "nope"


@dataclass(frozen=True)
class RoPEConfig:
    """RoPE. ``base``: 10,000 classic, 500,000 in the Selective RoPE papers' baselines;
    ``interleaved``: pair channels (2i, 2i+1) instead of (i, i + D/2).

    ``scaling``: context extension at evaluation time (see ``rotary/scaling.py``), None for plain
    RoPE, ``{"kind": "linear", "factor": s}`` (position interpolation) or ``{"kind": "yarn",
    "factor": s, "original_max_position": L, "beta_fast": 32, "beta_slow": 1}`` (the betas are
    optional). Stored as a plain dict with every key of its kind filled in.
    """

    type: Literal["rope"] = "rope"
    base: float = 10000.0
    interleaved: bool = False
    scaling: dict[str, Any] | None = field(default=None, hash=False)

    SCALING_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "linear": {},
        "yarn": {"beta_fast": 32, "beta_slow": 1},
    }
    SCALING_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "linear": ("kind", "factor"),
        "yarn": ("kind", "factor", "original_max_position", "beta_fast", "beta_slow"),
    }

    def __post_init__(self) -> None:
        _check_number("rope", "base", self.base, ">= 1", lambda v: v >= 1)
        _check_choice("rope", "interleaved", self.interleaved, (False, True))
        if self.scaling is None:
            return
        if not isinstance(self.scaling, Mapping):
            raise ValueError(f"rope.scaling must be None or a dict; got {self.scaling!r}")
        owner = "rope.scaling"
        _check_choice(owner, "kind", self.scaling.get("kind"), tuple(self.SCALING_KEYS))
        kind = self.scaling["kind"]
        scaling = {**self.SCALING_DEFAULTS[kind], **self.scaling}
        for key in scaling:
            if key not in self.SCALING_KEYS[kind]:
                raise ValueError(
                    f"{owner}.{key} is not an option of kind {kind!r}; "
                    f"allowed: {self.SCALING_KEYS[kind]}"
                )
        for key in self.SCALING_KEYS[kind]:
            if key not in scaling:
                raise ValueError(f"{owner}.{key} is required for kind {kind!r}")
        _check_number(owner, "factor", scaling["factor"], ">= 1", lambda v: v >= 1)
        if kind == "yarn":
            _check_number(
                owner,
                "original_max_position",
                scaling["original_max_position"],
                ">= 1 (integer)",
                _positive_int,
            )
            _check_number(owner, "beta_slow", scaling["beta_slow"], "> 0", lambda v: v > 0)
            _check_number(
                owner,
                "beta_fast",
                scaling["beta_fast"],
                f"> beta_slow ({scaling['beta_slow']})",
                lambda v: v > scaling["beta_slow"],
            )
            if self.base == 1:
                raise ValueError(
                    "rope.base must be > 1 with yarn scaling (base 1 has one frequency)"
                )
        object.__setattr__(self, "scaling", {key: scaling[key] for key in self.SCALING_KEYS[kind]})


@dataclass(frozen=True)
class CARoPEConfig:
    """CARoPE (see ``CARoPE``): ``base`` is the RoPE that ``rope_init`` reproduces at step 0;
    ``pair_start`` 0 or 1 is the exponent of pair 0's increment f^i."""

    type: Literal["carope"] = "carope"
    base: float = 10000.0
    rope_init: bool = True
    pair_start: int = 0
    interleaved: bool = False

    def __post_init__(self) -> None:
        _check_number("carope", "base", self.base, "> 1", lambda v: v > 1)
        _check_choice("carope", "rope_init", self.rope_init, (False, True))
        _check_choice("carope", "pair_start", self.pair_start, (0, 1))
        _check_choice("carope", "interleaved", self.interleaved, (False, True))


@dataclass(frozen=True)
class SelectiveRoPEConfig:
    """Selective RoPE options (arXiv 2511.17388), in pipeline order.

    projection: ``"low-rank"`` (d -> rank -> H*R, all heads see all of x) or ``"full-rank"``
        (per head, weight-normalised, times a learned scalar; head h sees its own slice of x).
    rank: the low-rank width (Python default of the paper's code is 16, every yaml uses 32).
    conv_activation: ``None`` (linear conv) or ``"silu"`` after the short conv.
    skip_conv: replace the learned conv by the fixed difference p_t - p_{t-1} (the angle becomes
        the current projection; the copying experiments' "RFF-like" variant).
    conv_size: the learned conv's kernel width.
    conv_init_std: std of the normal initialisation of the learned conv's weights (0.02 as the
        paper's Hugging-Face models); it sets the scale of the initial angle increments.
    use_bias: add ``exp(b)`` per (head, pair), b initialised at 0 (+1 per token at init).
    gate: ``None``, ``"standard"`` (d -> H), ``"low-rank"`` (d -> gate_rank -> H) or ``"gla"``
        (d -> gate_rank -> H*R), a sigmoid multiplying the increments.
    gate_rank: the low-rank width of the ``"low-rank"`` and ``"gla"`` gates.
    frequencies: ``"rope"``: ``temp_max * theta_base^(-2i/D)``; ``"rfa"``: tan-shaped with
        ``rfa_c`` in (0, 1), max ``temp_max``.
    theta_base: >= 1 (1 gives all frequencies equal to temp_max: the state-tracking recipe).
    rfa_c: 0.995 default; the copying config uses 0.9999.
    temp_max: the largest frequency.
    trainable_frequencies: learn the frequency vector (frozen buffer otherwise).
    interleaved: pair channels (2i, 2i+1) instead of (i, i + D/2).
    """

    type: Literal["selective"] = "selective"
    projection: str = "low-rank"
    rank: int = 32
    conv_activation: str | None = None
    skip_conv: bool = False
    conv_size: int = 4
    conv_init_std: float = 0.02
    use_bias: bool = False
    gate: str | None = None
    gate_rank: int = 16
    frequencies: str = "rope"
    theta_base: float = 500000.0
    rfa_c: float = 0.995
    temp_max: float = 1.0
    trainable_frequencies: bool = False
    interleaved: bool = False

    def __post_init__(self) -> None:
        owner = "selective"
        _check_choice(owner, "projection", self.projection, ("low-rank", "full-rank"))
        _check_number(owner, "rank", self.rank, ">= 1 (integer)", _positive_int)
        _check_choice(owner, "conv_activation", self.conv_activation, (None, "silu"))
        _check_choice(owner, "skip_conv", self.skip_conv, (False, True))
        if self.skip_conv and self.conv_activation is not None:
            raise ValueError(
                "selective.conv_activation must be None when skip_conv is True (the fixed "
                f"difference has no activation); got {self.conv_activation!r}"
            )
        _check_number(owner, "conv_size", self.conv_size, ">= 1 (integer)", _positive_int)
        _check_number(owner, "conv_init_std", self.conv_init_std, ">= 0", lambda v: v >= 0)
        _check_choice(owner, "use_bias", self.use_bias, (False, True))
        _check_choice(owner, "gate", self.gate, (None, "standard", "low-rank", "gla"))
        _check_number(owner, "gate_rank", self.gate_rank, ">= 1 (integer)", _positive_int)
        _check_choice(owner, "frequencies", self.frequencies, ("rope", "rfa"))
        _check_number(owner, "theta_base", self.theta_base, ">= 1", lambda v: v >= 1)
        _check_number(owner, "rfa_c", self.rfa_c, "in (0, 1)", lambda v: 0 < v < 1)
        _check_number(owner, "temp_max", self.temp_max, "> 0", lambda v: v > 0)
        _check_choice(owner, "trainable_frequencies", self.trainable_frequencies, (False, True))
        _check_choice(owner, "interleaved", self.interleaved, (False, True))


@dataclass(frozen=True)
class PoPEConfig:
    """PoPE (arXiv 2509.10534, see ``PoPE``): ``base`` of the D frequencies ``base^(-c/D)``
    (10,000 in every experiment of the paper); ``bias_init`` of the learned key phase bias:
    ``"zero"`` (the paper's language models; zero is "important for length generalization") or
    ``"uniform"`` on [-2 pi, 0] (its music, genome and indexing runs; "slightly better
    in-distribution"). q and k come out 2D wide (``PoPE.output_head_dim_factor``)."""

    type: Literal["pope"] = "pope"
    base: float = 10000.0
    bias_init: str = "zero"

    def __post_init__(self) -> None:
        _check_number("pope", "base", self.base, ">= 1", lambda v: v >= 1)
        _check_choice("pope", "bias_init", self.bias_init, ("zero", "uniform"))


RotaryConfig = NoPEConfig | RoPEConfig | CARoPEConfig | SelectiveRoPEConfig | PoPEConfig
"""Any of the rotary configs (what ``build_rotary`` accepts beside a dict)."""

CONFIG_TYPES: dict[str, type] = {
    "nope": NoPEConfig,
    "rope": RoPEConfig,
    "carope": CARoPEConfig,
    "selective": SelectiveRoPEConfig,
    "pope": PoPEConfig,
}


def parse_rotary_config(config: Mapping[str, Any] | RotaryConfig) -> RotaryConfig:
    """Turn a dict such as ``{"type": "selective", "gate": "standard"}`` into its config dataclass.

    Raises:
        ValueError: unknown ``type``, unknown keys for that type, or invalid values (the message
            names the key and the allowed values).
    """
    if isinstance(config, tuple(CONFIG_TYPES.values())):
        return config
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or a rotary config dataclass; got {type(config)}")
    kind = config.get("type")
    if kind not in CONFIG_TYPES:
        raise ValueError(f"type must be one of {tuple(CONFIG_TYPES)}; got {kind!r}")
    cls = CONFIG_TYPES[kind]
    allowed = tuple(field.name for field in dataclasses.fields(cls))
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for type {kind!r}; allowed keys: {allowed}")
    return cls(**config)


# The paper's best language-modelling setting (released LM sweep): full-rank per-head projection,
# SiLU short conv, per-head phase gate, no bias, RoPE-type frozen frequencies with base 500,000.
SELECTIVE_LM_RECIPE: Mapping[str, Any] = MappingProxyType(
    {
        "type": "selective",
        "projection": "full-rank",
        "conv_activation": "silu",
        "gate": "standard",
        "use_bias": False,
        "frequencies": "rope",
        "theta_base": 500000.0,
    }
)
"""Selective RoPE for language modelling: the released LM sweep's settings (full-rank, conv
+ SiLU, standard gate, no bias)."""

# State tracking (parity and group word problems): low-rank 32, linear conv, bias on (a learnable
# per-pair frequency), no gate, all frequencies 1 (theta_base 1).
SELECTIVE_STATE_TRACKING_RECIPE: Mapping[str, Any] = MappingProxyType(
    {
        "type": "selective",
        "projection": "low-rank",
        "rank": 32,
        "conv_activation": None,
        "use_bias": True,
        "gate": None,
        "frequencies": "rope",
        "theta_base": 1.0,
    }
)
"""Selective RoPE for state tracking (parity, group word problems)."""

# Copying with length generalisation: skip conv (absolute, token-local angles) and rfa frequencies
# (c = 0.9999, max 0.25); the paper sweeps gate and bias on top of this.
SELECTIVE_COPYING_RECIPE: Mapping[str, Any] = MappingProxyType(
    {
        "type": "selective",
        "projection": "low-rank",
        "rank": 32,
        "skip_conv": True,
        "frequencies": "rfa",
        "rfa_c": 0.9999,
        "temp_max": 0.25,
    }
)
"""Selective RoPE for the copying task."""
