"""Hugging Face transformers bridge (extra ``hf``): load, generate and evaluate selrope models the
way every other causal LM is loaded.

    import selrope.models.hf  # registers model_type "selrope" with the Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained("RUN/model")  # or RUN
    tokenizer = AutoTokenizer.from_pretrained("RUN/model")     # when tokenizer.json is there
    out = model.generate(**tokenizer("Once upon", return_tensors="pt"), max_new_tokens=20)

One weight format: ``SelropeForCausalLM.save_pretrained`` writes exactly what
``LanguageModel.save_pretrained`` writes (``config.json`` = ``{"model_type": "selrope"}`` + the
``LMConfig`` fields, and ``model.safetensors`` with the ``LanguageModel``'s parameter names), and
``from_pretrained`` reads either (directories written before ``model_type`` was added load through
``SelropeForCausalLM.from_pretrained``; ``AutoModelForCausalLM`` needs the key).

Decoding: ``forward`` returns the model's own :class:`~selrope.models.ModelCache` (KV caches,
recurrent states, conv tails, rotary phases) inside a :class:`SelropeCache`, and ``generate``
feeds it back with only the newest token, so each new token costs one step, never a recompute.
``models/lm.py`` imports nothing from transformers; this module is the only place that does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from selrope.models.config import MIXERS, mixer_fields
from selrope.models.io import lm_config, load_pretrained, model_directory
from selrope.models.lm import MODEL_TYPE, LanguageModel, LMConfig, ModelCache, lm_loss

EOS_TOKEN = "<|endoftext|>"  # selrope.data's document separator (both tokenizer kinds)
LM_FIELDS = tuple(f.name for f in dataclasses.fields(LMConfig))
# Mixer options at the top level: the flat config.json of releases before the mixer configs,
# which LMConfig.from_dict still reads.
_FLAT_MIXER_FIELDS = frozenset(name for kind in MIXERS for name in mixer_fields(kind))
# Keys that transformers itself passes to a config's constructor while loading (consumed by
# PreTrainedConfig.__post_init__); anything else that is not an LMConfig field is rejected.
_HF_CONSTRUCTOR_KEYS = frozenset(
    {
        "model_type",
        "name_or_path",
        "num_labels",
        "torch_dtype",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "_commit_hash",
        "_attn_implementation_internal",
        "_experts_implementation_internal",
    }
    | set(GenerationConfig._get_default_generation_params())
)
# from_pretrained arguments that only steer downloads or HF-only features; a local selrope
# directory needs none of them, so their default values are accepted and anything else refused.
_IGNORED_LOAD_ARGS = {
    "revision": (None, "main"),
    "subfolder": (None, ""),
    "gguf_file": (None,),
    "quantization_config": (None,),
    "tp_plan": (None,),
    "attn_implementation": (None, "eager", "sdpa"),
}
_HUB_ARGS = frozenset(
    {
        "trust_remote_code",
        "local_files_only",
        "cache_dir",
        "force_download",
        "proxies",
        "token",
        "low_cpu_mem_usage",
        "use_safetensors",
        "_from_auto",
        "_from_pipeline",
        "code_revision",
    }
)


class SelropeConfig(PreTrainedConfig):
    """transformers config of a selrope :class:`LanguageModel`: the ``LMConfig`` fields as
    attributes, validated by ``LMConfig`` itself.

    ``SelropeConfig(vocab_size=..., mixer="gla", ...)`` or :meth:`from_lm_config`. Unknown keys
    raise ValueError. Saved as ``{"model_type": "selrope", <LMConfig fields>}``, the same JSON that
    ``LanguageModel.save_pretrained`` writes.
    """

    model_type = MODEL_TYPE

    def __post_init__(self, **kwargs: Any) -> None:
        selrope_keys = set(LM_FIELDS) | _FLAT_MIXER_FIELDS
        lm_values = {key: kwargs.pop(key) for key in list(kwargs) if key in selrope_keys}
        unknown = sorted(set(kwargs) - _HF_CONSTRUCTOR_KEYS)
        if unknown:
            raise ValueError(
                f"unknown selrope config fields {unknown}; allowed: the LMConfig fields "
                f"{sorted(LM_FIELDS)}"
            )
        model_type = kwargs.pop("model_type", None)
        if model_type not in (None, MODEL_TYPE):
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {model_type!r}")
        # transformers builds bare configs (no fields) internally, e.g. for default values. A
        # model_type means a stored config.json, which LMConfig.from_dict reads as such.
        if lm_values:
            stored = {} if model_type is None else {"model_type": model_type}
            kwargs.update(LMConfig.from_dict({**stored, **lm_values}).to_dict())
        super().__post_init__(**kwargs)

    @classmethod
    def from_lm_config(cls, lm_config: LMConfig) -> SelropeConfig:
        """The transformers config holding ``lm_config``'s fields."""
        return cls(**lm_config.to_dict())

    def to_lm_config(self) -> LMConfig:
        """The ``LMConfig`` these attributes describe (ValueError if some are missing)."""
        missing = [name for name in LM_FIELDS if not hasattr(self, name)]
        if missing:
            raise ValueError(f"this SelropeConfig has no LMConfig fields {missing}")
        return LMConfig.from_dict({name: getattr(self, name) for name in LM_FIELDS})

    def to_diff_dict(self) -> dict[str, Any]:
        # What config.json holds: the selrope format, nothing transformers-specific.
        return {"model_type": MODEL_TYPE, **self.to_lm_config().to_dict()}


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` (nested tuples / NamedTuples of tensors and None) with ``fn`` applied to every
    tensor; a new structure, the input is not modified."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        mapped = [_map_tensors(item, fn) for item in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else tuple(mapped)
    return value


class SelropeCache(Cache):
    """transformers' view of a selrope :class:`ModelCache`.

    model_cache: the state returned by ``LanguageModel.forward`` (every tensor batch-first).
    seen_tokens: how many tokens of each row it has consumed (``get_seq_length``).

    ``forward`` returns a new ``SelropeCache`` per call; the batch operations of beam search
    (``reorder_cache``, ``batch_select_indices``, ``batch_repeat_interleave``) replace
    ``model_cache`` with re-indexed copies and never write into its tensors.
    """

    def __init__(self, model_cache: ModelCache, seen_tokens: int):
        super().__init__(layers=[])
        self.model_cache = model_cache
        self.seen_tokens = seen_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def is_linear(self) -> list[bool]:
        # Not all linear: generate then slices a continued prompt to its unseen tokens.
        return [False]

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return self.model_cache.position.shape[0]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.model_cache = _map_tensors(
            self.model_cache, lambda t: t.index_select(0, indices.to(t.device))
        )

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.model_cache = _map_tensors(
            self.model_cache, lambda t: t.repeat_interleave(repeats, dim=0)
        )

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError(
                "a selrope cache holds recurrent states and cannot be cropped"
            )


def _new_tokens_mask(
    attention_mask: torch.Tensor | None, length: int, cache: SelropeCache | None
) -> torch.Tensor | None:
    """The ``(B, T)`` columns of ``attention_mask`` that belong to the new tokens, or None.

    transformers passes the mask of every token seen so far (``(B, S + T)`` while decoding);
    ``LanguageModel`` takes the new tokens' only and keeps the rest in its cache. Pads on the
    left and / or right of the real tokens are taken; what is not (pads between real tokens, or
    real tokens after a cached pad) raises the one-line ValueError.
    """
    if attention_mask is None:
        return None
    seen = cache.seen_tokens if cache is not None else 0
    if attention_mask.dim() != 2 or attention_mask.shape[1] not in (length, seen + length):
        raise ValueError(
            f"attention_mask must be (B, {seen + length}) (every token seen so far) or "
            f"(B, {length}); got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(torch.int64)
    real = mask.bool()
    holes = real[:, :-1] & ~real[:, 1:]  # a real token followed by a pad ...
    later_real = real.flip(1).cumsum(1).flip(1)[:, 1:] > 0  # ... and a real token after it
    if bool((holes & later_real).any()):
        raise ValueError(
            "selrope models take no padding mask with pads between real tokens: pad on the "
            "left (generate) or the right (scoring)"
        )
    if mask.shape[1] > length and bool((real[:, -length] & ~real[:, -length - 1]).any()):
        raise ValueError(
            "selrope models take no padding mask with real tokens after a cached pad: prefill "
            "at least one real token of every row first"
        )
    return mask[:, -length:]


def _load_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` / ``torch_dtype`` argument of from_pretrained -> a torch dtype or None."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype must be a torch dtype name like 'float32'; got {dtype!r}")
    return resolved


def _load_device(device_map: Any) -> str | torch.device:
    """``device_map`` of from_pretrained -> one device (selrope models are not split)."""
    if device_map is None:
        return "cpu"
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise ValueError(f"a selrope model goes on one device; got device_map={device_map}")
        device_map = devices.pop()
    if isinstance(device_map, int):
        return torch.device("cuda", device_map)
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device_map


class SelropeForCausalLM(PreTrainedModel, GenerationMixin):
    """A selrope :class:`LanguageModel` as a transformers causal LM (``self.model``).

    Args:
        config: its :class:`SelropeConfig`.
        model: an existing ``LanguageModel`` to wrap (shares its parameters); default: a fresh
            one built from ``config``.
    """

    config_class = SelropeConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    # Recurrent states cannot be rolled back: no assisted/speculative decoding.
    _is_stateful = True
    supports_gradient_checkpointing = False

    def __init__(self, config: SelropeConfig, model: LanguageModel | None = None):
        super().__init__(config)
        self.model = model if model is not None else LanguageModel(config.to_lm_config())

    @classmethod
    def from_language_model(cls, model: LanguageModel) -> SelropeForCausalLM:
        """Wrap ``model`` (its parameters are shared, not copied)."""
        return cls(SelropeConfig.from_lm_config(model.config), model)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not create a DynamicCache: forward returns its own SelropeCache.
        return False

    def _init_weights(self, module: torch.nn.Module) -> None:
        # LanguageModel initialises itself; transformers must not re-initialise anything.
        return

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embedding

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.model.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: SelropeCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits of ``input_ids`` ``(B, T)``, continuing ``cache`` if given.

        Args:
            input_ids: ``(B, T)`` token ids (only the unseen ones when ``cache`` is given).
            attention_mask: ``(B, S)`` 0/1 (1: a real token) of every token seen so far, or
                None; pads on the left (``tokenizer.padding_side = "left"``, as generate needs)
                or on the right, never between real tokens (ValueError). Each row's real tokens
                give exactly what that sequence gives alone (``LanguageModel.forward``).
            cache: the ``cache`` of an earlier output.
            use_cache: return the new cache (implied by ``cache``).
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted here, -100 ignored);
                gives ``loss``.
            return_dict: False returns a tuple ``(loss?, logits, cache?)``.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` ``(B, T, vocab_size)``, ``loss`` and
            ``cache`` (a new :class:`SelropeCache`) when asked for.
        """
        unexpected = sorted(key for key, value in kwargs.items() if value is not None)
        if unexpected:
            raise ValueError(f"SelropeForCausalLM.forward does not take {unexpected}")
        caching = cache is not None or bool(use_cache)
        mask = _new_tokens_mask(attention_mask, input_ids.shape[1], cache)
        new_cache = None
        if caching:
            past = cache.model_cache if cache is not None else None
            logits, model_cache = self.model(input_ids, past, use_cache=True, attention_mask=mask)
            seen = (cache.seen_tokens if cache is not None else 0) + input_ids.shape[1]
            new_cache = SelropeCache(model_cache, seen)
        else:
            logits = self.model(input_ids, attention_mask=mask)
        loss = None
        if labels is not None:
            loss = lm_loss(logits[:, :-1], labels[:, 1:].to(logits.device))
        if return_dict is False:
            return tuple(item for item in (loss, logits, new_cache) if item is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=new_cache)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Write ``config.json`` + ``model.safetensors`` as ``LanguageModel.save_pretrained``.

        Only ``is_main_process`` (default True) is read from the transformers arguments; shards,
        pushes and pickles are not offered.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("selrope models are saved locally; push_to_hub is not supported")
        if kwargs.get("safe_serialization") is False:
            raise ValueError("selrope models are saved as safetensors only")
        if kwargs.get("is_main_process", True):
            self.model.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *model_args: Any,
        config: SelropeConfig | None = None,
        dtype: Any = None,
        torch_dtype: Any = None,
        device_map: Any = None,
        **kwargs: Any,
    ) -> SelropeForCausalLM:
        """Load a selrope model directory (or a training run holding one in ``model/``).

        Args:
            pretrained_model_name_or_path: a local directory; nothing is downloaded.
            config: a SelropeConfig to use instead of the saved one.
            dtype / torch_dtype: e.g. ``"float32"``, ``torch.bfloat16`` or "auto" (as saved).
            device_map: a device (``"cpu"``, ``"cuda:0"``, ``{"": 0}``) or "auto".

        Raises:
            ValueError: not a selrope directory, or an argument this loader cannot honour, or
                one of ``selrope.models.io.load_pretrained``'s refusals (a truncated weights file,
                a model beyond the machine, weights of another shape).
        """
        if model_args:
            raise ValueError("SelropeForCausalLM.from_pretrained takes no positional model args")
        for key, value in kwargs.items():
            if value is None or key in _HUB_ARGS:
                continue
            if key not in _IGNORED_LOAD_ARGS or value not in _IGNORED_LOAD_ARGS[key]:
                raise ValueError(
                    f"SelropeForCausalLM.from_pretrained cannot honour {key}={value!r}"
                )
        directory = model_directory(pretrained_model_name_or_path)
        if config is None:
            config = SelropeConfig.from_lm_config(lm_config(directory))
        loaded = load_pretrained(directory, config=config.to_lm_config())
        model = cls(config, loaded.model)
        model.config.name_or_path = str(directory)
        if loaded.tokenizer_file is not None:  # generate stops at the corpus's end-of-text token
            from tokenizers import Tokenizer

            eos_id = Tokenizer.from_file(str(loaded.tokenizer_file)).token_to_id(EOS_TOKEN)
            model.generation_config.eos_token_id = eos_id
            model.generation_config.pad_token_id = eos_id
        load_dtype = _load_dtype(dtype if dtype is not None else torch_dtype)
        if load_dtype is not None:
            model = model.to(load_dtype)
        return model.to(_load_device(device_map)).eval()


class SelropeTokenizer(PreTrainedTokenizerFast):
    """The ``tokenizer.json`` of a selrope corpus (byte or BPE), loaded unchanged, with
    ``<|endoftext|>`` as its end-of-text and padding token and padding on the left when no
    tokenizer_config.json says otherwise (so a run's ``model/`` directory loads as it is, and
    batches of prompts pad the way ``generate`` and ``pipeline("text-generation")`` need)."""

    # No __init__ of its own: transformers then loads tokenizer.json as it is, like
    # PreTrainedTokenizerFast, instead of rebuilding a model-specific pipeline.

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> SelropeTokenizer:
        tokenizer = super().from_pretrained(*args, **kwargs)
        if tokenizer.eos_token is None and EOS_TOKEN in tokenizer.get_vocab():
            tokenizer.eos_token = EOS_TOKEN
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if "padding_side" not in kwargs and "padding_side" not in tokenizer.init_kwargs:
            tokenizer.padding_side = "left"
        return tokenizer


def register() -> None:
    """Register ``model_type "selrope"`` with AutoConfig, AutoModelForCausalLM and
    AutoTokenizer (done on import; calling it again is harmless)."""
    AutoConfig.register(MODEL_TYPE, SelropeConfig, exist_ok=True)
    AutoModelForCausalLM.register(SelropeConfig, SelropeForCausalLM, exist_ok=True)
    AutoTokenizer.register(SelropeConfig, fast_tokenizer_class=SelropeTokenizer, exist_ok=True)


register()

__all__ = [
    "SelropeCache",
    "SelropeConfig",
    "SelropeForCausalLM",
    "SelropeTokenizer",
    "register",
]
