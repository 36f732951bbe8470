"""The decoder language model: embedding, pre-norm blocks (mixer + SwiGLU), LM head.

Read top to bottom: ``Block``, ``LanguageModel`` (forward, loss, generate, save/load); the
options are ``LMConfig`` and the mixer configs in ``config.py``. Any mixer takes any rotary
embedding through ``LMConfig.rotary``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers import RMSNorm, SwiGLU
from selrope.models.config import (  # noqa: F401 - re-exported: the model file's vocabulary
    ABSOLUTE_POSITIONS,
    MIXERS,
    MODEL_TYPE,
    ROTARY_SOURCES,
    LMConfig,
)
from selrope.ops import check_segment_ids, positions_in_segment, segment_ids_from_cu_seqlens
from selrope.rotary import LearnedPositionEmbedding, SinusoidalPositionEmbedding

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def parameter_count(config: LMConfig) -> int:
    """How many parameters ``LanguageModel(config)`` has, counted on the meta device: nothing is
    allocated or initialised, so a model too large for the machine can be refused first."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in LanguageModel(config).parameters())


class Block(nn.Module):
    """RMSNorm -> mixer -> residual, then RMSNorm -> SwiGLU -> residual."""

    def __init__(self, config: LMConfig, layer: int):
        super().__init__()
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = config.build_mixer(layer)
        hidden = config.mlp_hidden_size
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
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
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
        ``model.safetensors`` (no pickle) into ``directory`` (``selrope.models.io``)."""
        from selrope.models.io import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> LanguageModel:
        """Rebuild a model written by :meth:`save_pretrained` (a model directory, or a run folder
        holding one in ``model/``), in eval mode, without moving the global RNG; refusals are
        one-line ValueErrors (``selrope.models.io.load_pretrained``)."""
        from selrope.models.io import load_pretrained

        return load_pretrained(directory, map_location).model


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
