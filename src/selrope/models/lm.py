"""The decoder language model: embedding, pre-norm blocks (mixer + MLP), LM head.

Read top to bottom: ``Block``, ``LanguageModel`` (forward, loss, generate, save/load); the
options are ``LMConfig`` and the mixer configs in ``config.py``. Any mixer takes any rotary
embedding through ``LMConfig.rotary``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from selrope.layers import build_mlp, build_norm
from selrope.models.config import (  # noqa: F401 - re-exported: the model file's vocabulary
    ABSOLUTE_POSITIONS,
    MIXERS,
    MODEL_TYPE,
    ROTARY_SOURCES,
    LMConfig,
)
from selrope.ops import (
    check_segment_ids,
    positions_in_segment,
    segment_ids_from_attention_mask,
    segment_ids_from_cu_seqlens,
)
from selrope.rotary import LearnedPositionEmbedding, SinusoidalPositionEmbedding

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def parameter_count(config: LMConfig) -> int:
    """How many parameters ``LanguageModel(config)`` has, counted on the meta device: nothing is
    allocated or initialised, so a model too large for the machine can be refused first."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in LanguageModel(config).parameters())


class Block(nn.Module):
    """norm -> mixer -> residual, then norm -> MLP -> residual (``LMConfig.norm``, ``mlp``)."""

    def __init__(self, config: LMConfig, layer: int):
        super().__init__()
        self.mixer_norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.mixer = config.build_mixer(layer)
        hidden = config.mlp_hidden_size
        self.mlp_norm = build_norm(config.norm, config.d_model, config.norm_eps) if hidden else None
        self.mlp = build_mlp(config.mlp, config.d_model, hidden) if hidden else None

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
        scale = config.sinusoidal_scale
        return SinusoidalPositionEmbedding(
            config.d_model, scale=config.init_std if scale is None else scale
        )
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
        self.final_norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()
        self.activation_checkpointing = False
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def gradient_checkpointing_enable(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass while training (memory for
        time; the losses and gradients are unchanged). The Hugging Face name."""
        self.activation_checkpointing = enabled

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
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ModelCache]:
        """Logits for every position.

        Packed documents (``cu_seqlens`` or ``segment_ids``) are each processed exactly as if
        alone: attention and FoX stay within a document; GLA / Gated DeltaNet states, short
        convs, rotary and absolute positions restart at every document start. The first document
        of each row continues from ``cache`` (if given); the returned cache continues the row's
        last document (the KV caches of attention and FoX keep every token of the row, but
        later tokens see only that document's).

        Padding is packing (``ops.segment_ids_from_attention_mask``): each run of pads in
        ``attention_mask`` is a document of its own, so the real tokens of a left-padded row
        give exactly the logits of the unpadded prompt and continue as it would, and right
        padding changes nothing before the pads. The logits at pads are meaningless.

        Args:
            input_ids: ``(B, T)`` token ids.
            cache: the state returned by an earlier call; continues that sequence.
            use_cache: return the new cache as well (implied when ``cache`` is given).
            cu_seqlens: ``(N + 1,)`` integer document boundaries ``[0, ..., T]`` of a single
                packed row (B = 1; the flash-attn varlen convention), or None.
            segment_ids: ``(B, T)`` integer document ids (a new document starts where the id
                changes), or None. Not together with ``cu_seqlens``.
            attention_mask: ``(B, T)`` 0/1 of these tokens (1: real, 0: a pad; Hugging Face's
                convention, but only the new tokens' columns when continuing a cache), pads on
                the left and / or right of each document, or None (all real). May be combined
                with ``cu_seqlens`` or ``segment_ids``.

        Returns:
            logits ``(B, T, vocab_size)``, or ``(logits, new cache)`` when caching.
        """
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (B, T); "
                f"got {tuple(input_ids.shape)} {input_ids.dtype}"
            )
        segment_ids = self._segment_ids(input_ids, cu_seqlens, segment_ids, attention_mask)
        h = self.embedding(input_ids)
        rotary_input = h if self.config.rotary_source == "embedding" else None
        offset = cache.position if cache is not None and cache.position is not None else 0
        if self.position_embedding is not None:
            h = self.position_embedding(h, offset, segment_ids)
        past = cache.layers if cache is not None else (None,) * len(self.blocks)
        new_caches = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block, layer_cache in zip(self.blocks, past, strict=True):
            if recompute:  # the block's activations are recomputed in the backward
                h, layer_cache = checkpoint(
                    block, h, layer_cache, rotary_input, segment_ids, use_reentrant=False
                )
            else:
                h, layer_cache = block(h, layer_cache, rotary_input, segment_ids)
            new_caches.append(layer_cache)
        logits = self.lm_head(self.final_norm(h))
        if cache is None and not use_cache:
            return logits
        return logits, ModelCache(tuple(new_caches), _next_position(input_ids, offset, segment_ids))

    @staticmethod
    def _segment_ids(
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor | None,
        segment_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The checked ``(B, T)`` segment ids from the arguments (or None), pads as documents."""
        B, T = input_ids.shape
        if cu_seqlens is not None:
            if segment_ids is not None:
                raise ValueError("cu_seqlens and segment_ids describe the same thing; give one")
            if B != 1:
                raise ValueError(
                    f"cu_seqlens describes a single packed row; got input_ids of shape {(B, T)} "
                    f"(use segment_ids for B > 1)"
                )
            segment_ids = segment_ids_from_cu_seqlens(cu_seqlens.to(input_ids.device), T)
        elif segment_ids is not None:
            check_segment_ids(segment_ids, B, T)
        if attention_mask is None:
            return segment_ids
        if not torch.is_tensor(attention_mask) or tuple(attention_mask.shape) != (B, T):
            got = tuple(attention_mask.shape) if torch.is_tensor(attention_mask) else attention_mask
            raise ValueError(f"attention_mask must have the shape of input_ids {(B, T)}; got {got}")
        attention_mask = attention_mask.to(input_ids.device)
        if segment_ids is None and bool((attention_mask == 1).all()):
            return None  # no pads: exactly the unpadded model
        return segment_ids_from_attention_mask(attention_mask, segment_ids)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | Sequence[torch.Tensor | Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        attention_mask: torch.Tensor | None = None,
        pad_id: int = 0,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Continue ``input_ids`` ``(B, T)`` by up to ``max_new_tokens`` tokens.

        The prompt is prefilled once, then each token is decoded with the per-layer caches (KV
        for attention, KV and forget-gate sums for FoX; recurrent state, conv caches and rotary
        state for GLA/GDN).
        ``temperature=0`` is greedy; otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens if given. Rows that emitted ``eos_id`` keep
        emitting it.

        Prompts of different lengths: a left-padded batch with its ``attention_mask`` (the
        Hugging Face convention), or a list of 1-D prompts, left-padded here with ``pad_id``.
        Every row then gets exactly what its prompt gets alone (greedy, and sampled when each
        row has its own generator).

        Args:
            input_ids: ``(B, T)`` token ids, or a list of B prompts (1-D tensors or lists).
            max_new_tokens: the most tokens to add.
            temperature, top_k, eos_id: as above.
            generator: one ``torch.Generator`` for the whole batch, or one per row (a row then
                samples what it samples alone with that generator), or None (the global RNG).
            attention_mask: ``(B, T)`` 0/1, pads on the left only (the last token of every row
                real), or None.
            pad_id: the token that pads a list of prompts (never seen by the model).

        Returns:
            ``(B, T + n)`` with n <= max_new_tokens; for a list of prompts, a list of 1-D
            tensors, each prompt followed by its n new tokens.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None; got {top_k}")
        prompt_list = not torch.is_tensor(input_ids)
        if prompt_list:
            if attention_mask is not None:
                raise ValueError("a list of prompts is padded here; give no attention_mask")
            input_ids, attention_mask = left_pad(input_ids, pad_id, self.embedding.weight.device)
        B = input_ids.shape[0]
        if attention_mask is not None and not bool((attention_mask[:, -1] == 1).all()):
            raise ValueError(
                "generate needs left padding: attention_mask must end in 1 in every row "
                "(tokenizer.padding_side = 'left')"
            )
        generators = generator if isinstance(generator, (list, tuple)) else None
        if generators is not None and len(generators) != B:
            raise ValueError(f"generator: give one per row ({B}); got {len(generators)}")
        tokens = input_ids
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        logits, cache = self(input_ids, use_cache=True, attention_mask=attention_mask)
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
                if generators is None:
                    next_token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                else:
                    next_token = torch.cat(
                        [
                            torch.multinomial(probs[b : b + 1], 1, generator=generators[b])[0]
                            for b in range(B)
                        ]
                    )
            if eos_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
                finished = finished | (next_token == eos_id)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
            logits, cache = self(next_token[:, None], cache)
        if not prompt_list:
            return tokens
        new = tokens.shape[1] - input_ids.shape[1]
        lengths = attention_mask.sum(dim=1).tolist()
        return [row[row.shape[0] - new - n :] for row, n in zip(tokens, lengths, strict=True)]

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


def left_pad(
    prompts: Sequence[torch.Tensor | Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D prompts -> ``(ids (B, T), attention_mask (B, T))``, padded on the left with
    ``pad_id`` to the longest (the batch ``generate`` takes)."""
    rows = [torch.as_tensor(prompt, dtype=torch.int64, device=device) for prompt in prompts]
    if not rows or any(row.dim() != 1 or row.numel() == 0 for row in rows):
        raise ValueError("prompts must be a non-empty list of non-empty 1-D token sequences")
    T = max(row.numel() for row in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.int64, device=device)
    mask = torch.zeros(len(rows), T, dtype=torch.int64, device=device)
    for b, row in enumerate(rows):
        ids[b, T - row.numel() :] = row
        mask[b, T - row.numel() :] = 1
    return ids, mask


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
