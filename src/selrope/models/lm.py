"""The decoder language model: embedding, pre-norm blocks (mixer + SwiGLU), LM head.

Read top to bottom: ``LMConfig`` (every option), ``Block``, ``LanguageModel`` (forward, loss,
generate, save/load). Any mixer takes any rotary embedding through ``LMConfig.rotary``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers import (
    Attention,
    ForgettingAttention,
    GatedDeltaNet,
    GatedLinearAttention,
    RMSNorm,
    SwiGLU,
)
from selrope.layers.blocks import head_widths
from selrope.layers.forgetting_attention import FORGET_BIAS_INIT
from selrope.layers.gla import DECAYS
from selrope.ops import check_segment_ids, positions_in_segment, segment_ids_from_cu_seqlens
from selrope.rotary import LearnedPositionEmbedding, SinusoidalPositionEmbedding

MIXERS = ("attention", "fox", "gla", "gdn")
# The linear-recurrent mixers, which read expand_k / expand_v / form / chunk_size.
RECURRENT_MIXERS = ("gla", "gdn")
ROTARY_SOURCES = ("layer", "embedding")
ABSOLUTE_POSITIONS = ("none", "sinusoidal", "learned")
CONFIG_FILE = "config.json"


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


WEIGHTS_FILE = "model.safetensors"
# config.json names it so that transformers' AutoConfig finds selrope.models.hf's classes.
MODEL_TYPE = "selrope"


@dataclass
class LMConfig:
    """Every option of the language model.

    Attributes:
        vocab_size: number of tokens.
        d_model: model width d.
        n_layers: number of blocks.
        n_heads: heads per mixer (must divide d_model).
        mixer: "attention" | "fox" (Forgetting Transformer) | "gla" | "gdn" for every layer, or a
            list with one entry per layer (hybrids, e.g. ``["gla", "attention"]``).
        rotary: rotary embedding config for ``selrope.rotary.build_rotary`` (same in every layer).
        rotary_source: what the rotary embedding reads: "layer" (each mixer's normalised input)
            or "embedding" (the token embeddings, shared by all layers; CARoPE's literal reading).
        absolute_position: "none", "sinusoidal" or "learned": an absolute position embedding
            added to the token embeddings (a baseline; independent of ``rotary``).
        max_positions: size of the learned position table; later positions raise ValueError.
        mlp_ratio: SwiGLU inner width = round(mlp_ratio * d_model); 0 means no MLP sublayer.
        norm_eps: RMSNorm epsilon.
        forget_bias_init: FoX forget-gate bias at initialisation; sigmoid(5) = 0.993 starts the
            gates near 1 (the FoX paper's code starts at 0, gates near 1/2).
        tie_embeddings: share the embedding and LM-head matrices.
        init_std: std of the normal init of embeddings and the mixers' and MLPs' linear weights.
        expand_k: GLA/GDN q/k width as a multiple of d_model.
        expand_v: GLA/GDN v width as a multiple of d_model.
        use_short_conv: short causal convs on q, k, v in GLA/GDN.
        conv_size: kernel width of those short convs.
        gate_low_rank_dim: rank of the GLA forget-gate projection.
        gate_logit_normalizer: divisor of the GLA forget-gate logits.
        tie_pair_decay: GLA decays shared within each rotation pair (exact complex recurrence).
        decay: GLA decay "learned" or "none" (alpha = 1, linear attention).
        form: "chunk" or "recurrent" kernels for GLA/GDN.
        chunk_size: chunk length of the chunked kernels.
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mixer: str | list[str] = "gla"
    rotary: dict[str, Any] = field(default_factory=lambda: {"type": "nope"})
    rotary_source: str = "layer"
    absolute_position: str = "none"
    max_positions: int = 4096
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    forget_bias_init: float = FORGET_BIAS_INIT
    tie_embeddings: bool = False
    init_std: float = 0.02
    expand_k: float = 1.0
    expand_v: float = 1.0
    use_short_conv: bool = True
    conv_size: int = 4
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0
    tie_pair_decay: bool = False
    decay: str = "learned"
    form: str = "chunk"
    chunk_size: int = 64

    def __post_init__(self) -> None:
        # Keep the rotary config a plain dict (JSON-serialisable, copyable); it is validated when
        # the layers build their rotary embeddings.
        self.rotary = (
            dataclasses.asdict(self.rotary)
            if dataclasses.is_dataclass(self.rotary)
            else dict(self.rotary)
        )
        if isinstance(self.mixer, tuple):
            self.mixer = list(self.mixer)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads must divide d_model; got d_model={self.d_model}, n_heads={self.n_heads}"
            )
        for mixer in self.layer_mixers():
            if mixer not in MIXERS:
                raise ValueError(f"mixer must be one of {MIXERS}; got {mixer!r}")
        if isinstance(self.mixer, list) and len(self.mixer) != self.n_layers:
            raise ValueError(
                f"mixer as a list needs one entry per layer (n_layers={self.n_layers}); "
                f"got {len(self.mixer)}"
            )
        if self.rotary_source not in ROTARY_SOURCES:
            raise ValueError(
                f"rotary_source must be one of {ROTARY_SOURCES}; got {self.rotary_source!r}"
            )
        if self.absolute_position not in ABSOLUTE_POSITIONS:
            raise ValueError(
                f"absolute_position must be one of {ABSOLUTE_POSITIONS}; "
                f"got {self.absolute_position!r}"
            )
        for name in ("conv_size", "gate_low_rank_dim", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two; got {self.chunk_size}")
        for name in ("norm_eps", "init_std", "expand_k", "expand_v", "gate_logit_normalizer"):
            value = getattr(self, name)
            if not _finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a positive float; got {value!r}")
        if not _finite_number(self.mlp_ratio) or self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be a float >= 0; got {self.mlp_ratio!r}")
        for name in ("tie_embeddings", "use_short_conv", "tie_pair_decay"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}; got {self.decay!r}")
        if not _finite_number(self.forget_bias_init):
            raise ValueError(
                f"forget_bias_init must be a finite float; got {self.forget_bias_init!r}"
            )
        if any(mixer in RECURRENT_MIXERS for mixer in self.layer_mixers()):
            head_widths(self.d_model, self.n_heads, self.expand_k, self.expand_v, self.form)

    def layer_mixers(self) -> list[str]:
        """The mixer name of each layer."""
        if isinstance(self.mixer, str):
            return [self.mixer] * self.n_layers
        return list(self.mixer)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LMConfig:
        """The config of ``values`` (a saved config.json may also hold ``"model_type":
        "selrope"``); ValueError on unknown keys."""
        values = dict(values)
        if values.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {values['model_type']!r}")
        values.pop("model_type", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def parameter_count(config: LMConfig) -> int:
    """How many parameters ``LanguageModel(config)`` has, counted on the meta device: nothing is
    allocated or initialised, so a model too large for the machine can be refused first."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in LanguageModel(config).parameters())


def build_mixer(name: str, config: LMConfig) -> nn.Module:
    """The mixer layer called ``name`` (one of ``MIXERS``) configured from ``config``."""
    common = {"model_dim": config.d_model, "num_heads": config.n_heads, "rotary": config.rotary}
    if name == "attention":
        return Attention(**common)
    if name == "fox":
        return ForgettingAttention(**common, forget_bias_init=config.forget_bias_init)
    recurrent = {
        "expand_k": config.expand_k,
        "expand_v": config.expand_v,
        "use_short_conv": config.use_short_conv,
        "conv_size": config.conv_size,
        "form": config.form,
        "chunk_size": config.chunk_size,
        "norm_eps": config.norm_eps,
    }
    if name == "gla":
        return GatedLinearAttention(
            **common,
            **recurrent,
            gate_low_rank_dim=config.gate_low_rank_dim,
            gate_logit_normalizer=config.gate_logit_normalizer,
            tie_pair_decay=config.tie_pair_decay,
            decay=config.decay,
        )
    if name == "gdn":
        return GatedDeltaNet(**common, **recurrent)
    raise ValueError(f"mixer must be one of {MIXERS}; got {name!r}")


class Block(nn.Module):
    """RMSNorm -> mixer -> residual, then RMSNorm -> SwiGLU -> residual."""

    def __init__(self, mixer: str, config: LMConfig):
        super().__init__()
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = build_mixer(mixer, config)
        hidden = round(config.mlp_ratio * config.d_model)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps) if hidden else None
        self.mlp = SwiGLU(config.d_model, hidden) if hidden else None

    def forward(
        self,
        h: torch.Tensor,
        cache: Any = None,
        rotary_input: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """h ``(B, T, d)`` -> ``(h (B, T, d), the mixer's new cache)``; ``segment_ids``
        ``(B, T)`` or None are the packed documents, passed to the mixer."""
        mixed, cache = self.mixer(self.mixer_norm(h), cache, rotary_input, segment_ids)
        h = h + mixed
        if self.mlp is not None:
            h = h + self.mlp(self.mlp_norm(h))
        return h, cache


class ModelCache(NamedTuple):
    """Decoding state of a :class:`LanguageModel`.

    layers: one cache per layer, in layer order.
    position: ``(B,)`` int64, the position (within its document) of each row's next token; the
        offset of the absolute position embedding. None is read as 0.
    """

    layers: tuple[Any, ...]
    position: torch.Tensor | None = None


def build_position_embedding(config: LMConfig) -> nn.Module | None:
    """The absolute position embedding ``config.absolute_position`` names, or None."""
    if config.absolute_position == "sinusoidal":
        return SinusoidalPositionEmbedding(config.d_model)
    if config.absolute_position == "learned":
        return LearnedPositionEmbedding(config.max_positions, config.d_model)
    return None


class LanguageModel(nn.Module):
    """Decoder-only language model over any mixer and rotary embedding (see LMConfig)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = build_position_embedding(config)
        self.blocks = nn.ModuleList(Block(m, config) for m in config.layer_mixers())
        self.final_norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def _init_weights(self) -> None:
        # N(0, init_std) for embeddings and every linear map outside the rotary embeddings, zero
        # biases. The rotary modules keep their own documented initialisation.
        nn.init.normal_(self.embedding.weight, std=self.config.init_std)
        for name, module in self.named_modules():
            if ".rotary" in f".{name}" or not isinstance(module, nn.Linear):
                continue
            nn.init.normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: ModelCache | None = None,
        use_cache: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ModelCache]:
        """Logits for every position.

        Packed documents (``cu_seqlens`` or ``segment_ids``) are each processed exactly as if
        alone: attention and FoX stay within a document; GLA / Gated DeltaNet states, short
        convs, rotary and absolute positions restart at every document start. The first document
        of each row continues from ``cache`` (if given); the returned cache continues the row's
        last document, except the KV caches of attention and FoX, which keep every token of the
        row.

        Args:
            input_ids: ``(B, T)`` token ids.
            cache: the state returned by an earlier call; continues that sequence.
            use_cache: return the new cache as well (implied when ``cache`` is given).
            cu_seqlens: ``(N + 1,)`` integer document boundaries ``[0, ..., T]`` of a single
                packed row (B = 1; the flash-attn varlen convention), or None.
            segment_ids: ``(B, T)`` integer document ids (a new document starts where the id
                changes), or None. Not together with ``cu_seqlens``.

        Returns:
            logits ``(B, T, vocab_size)``, or ``(logits, new cache)`` when caching.
        """
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (B, T); "
                f"got {tuple(input_ids.shape)} {input_ids.dtype}"
            )
        segment_ids = self._segment_ids(input_ids, cu_seqlens, segment_ids)
        h = self.embedding(input_ids)
        rotary_input = h if self.config.rotary_source == "embedding" else None
        offset = cache.position if cache is not None and cache.position is not None else 0
        if self.position_embedding is not None:
            h = self.position_embedding(h, offset, segment_ids)
        past = cache.layers if cache is not None else (None,) * len(self.blocks)
        new_caches = []
        for block, layer_cache in zip(self.blocks, past, strict=True):
            h, layer_cache = block(h, layer_cache, rotary_input, segment_ids)
            new_caches.append(layer_cache)
        logits = self.lm_head(self.final_norm(h))
        if cache is None and not use_cache:
            return logits
        return logits, ModelCache(tuple(new_caches), _next_position(input_ids, offset, segment_ids))

    @staticmethod
    def _segment_ids(
        input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None, segment_ids: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The checked ``(B, T)`` segment ids from either argument (or None)."""
        B, T = input_ids.shape
        if cu_seqlens is not None:
            if segment_ids is not None:
                raise ValueError("cu_seqlens and segment_ids describe the same thing; give one")
            if B != 1:
                raise ValueError(
                    f"cu_seqlens describes a single packed row; got input_ids of shape {(B, T)} "
                    f"(use segment_ids for B > 1)"
                )
            return segment_ids_from_cu_seqlens(cu_seqlens.to(input_ids.device), T)
        if segment_ids is not None:
            check_segment_ids(segment_ids, B, T)
        return segment_ids

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``input_ids`` ``(B, T)`` by up to ``max_new_tokens`` tokens.

        The prompt is prefilled once, then each token is decoded with the per-layer caches (KV
        for attention, KV and forget-gate sums for FoX; recurrent state, conv caches and rotary
        state for GLA/GDN).
        ``temperature=0`` is greedy; otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens if given. Rows that emitted ``eos_id`` keep
        emitting it. Returns ``(B, T + n)`` with n <= max_new_tokens.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None; got {top_k}")
        tokens = input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        logits, cache = self(input_ids, use_cache=True)
        for _ in range(max_new_tokens):
            next_logits = logits[:, -1].float()
            if temperature == 0:
                next_token = next_logits.argmax(-1)
            else:
                next_logits = next_logits / temperature
                if top_k is not None:
                    kth = next_logits.topk(min(top_k, next_logits.shape[-1]), dim=-1).values[:, -1:]
                    next_logits = next_logits.masked_fill(next_logits < kth, float("-inf"))
                probs = next_logits.softmax(-1)
                next_token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            if eos_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
                finished = finished | (next_token == eos_id)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
            logits, cache = self(next_token[:, None], cache)
        return tokens

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` (``{"model_type": "selrope", <LMConfig fields>}``) and
        ``model.safetensors`` (no pickle) into ``directory``."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model_type": MODEL_TYPE, **self.config.to_dict()}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_model(self, str(directory / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> LanguageModel:
        """Rebuild a model written by :meth:`save_pretrained`."""
        from safetensors.torch import load_model

        directory = Path(directory)
        config = LMConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        model = cls(config)
        load_model(model, str(directory / WEIGHTS_FILE), device=str(map_location))
        return model.to(map_location)


def _next_position(
    input_ids: torch.Tensor, offset: int | torch.Tensor, segment_ids: torch.Tensor | None
) -> torch.Tensor:
    """``(B,)`` int64 position (within its document) of the token after ``input_ids``."""
    B, T = input_ids.shape
    offset = torch.as_tensor(offset, dtype=torch.int64, device=input_ids.device).expand(B)
    if segment_ids is None:
        return offset + T
    return positions_in_segment(segment_ids, offset)[:, -1] + 1


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of logits ``(B, T, V)`` against targets ``(B, T)`` (float32 math)."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index
    )
