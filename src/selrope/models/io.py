"""Saving and loading models: the one writer and the one loader of ``config.json`` +
``model.safetensors`` (+ the corpus ``tokenizer.json`` beside them).

A model directory holds

    config.json         {"model_type": "selrope", <LMConfig fields>}
    model.safetensors   the state dict, each shared tensor (tied embeddings) stored once
    tokenizer.json      the corpus tokenizer (runs of language models; optional)

and a run folder holds one in ``model/``. ``LanguageModel.save_pretrained`` /
``from_pretrained``, the Hugging Face bridge (``models/hf.py``), ``selrope eval``,
``selrope analyze`` and the trainer's checkpoints (``training/checkpoint.py``) all go through
``save_weights`` / ``load_weights`` and ``load_pretrained`` here.

Loading checks before it allocates: the config is valid, the model fits the machine
(parameters counted on the meta device), the weights file is a complete safetensors file whose
tensors have the shapes the config asks for. Each refusal is a one-line ``ValueError`` naming the
file. Loading never moves the global RNG (the initialisation it overwrites runs in a fork).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from selrope.common.files import TOKENIZER_FILE
from selrope.common.memory import gigabytes, physical_memory_bytes
from selrope.models.lm import (
    CONFIG_FILE,
    MODEL_TYPE,
    WEIGHTS_FILE,
    LanguageModel,
    LMConfig,
    parameter_count,
)

# Loading holds the model (float32) and the tensors read from the file at the same time.
LOAD_BYTES_PER_PARAMETER = 8
# safetensors dtype names -> bytes per element (the format's own table).
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_HEADER_LIMIT = 100_000_000  # safetensors' own cap on the JSON header


class LoadedModel(NamedTuple):
    """What ``load_pretrained`` returns.

    model: the ``LanguageModel`` (eval mode, on the requested device).
    config: its ``LMConfig`` (the saved one, or with the rotary override applied).
    directory: the model directory (``RUN/model`` for a run folder).
    tokenizer_file: ``directory/tokenizer.json`` when it exists, else None.
    """

    model: LanguageModel
    config: LMConfig
    directory: Path
    tokenizer_file: Path | None


def model_directory(path: str | Path) -> Path:
    """``path`` or ``path/model`` (a run folder), whichever holds config.json + model.safetensors.

    Raises:
        ValueError: neither holds both files.
    """
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
            return candidate
    raise ValueError(
        f"{path} holds no {CONFIG_FILE} + {WEIGHTS_FILE} (nor does its model/): expected a model "
        f"directory written by save_pretrained or a run folder"
    )


def read_config(directory: str | Path) -> dict[str, Any]:
    """The JSON object of ``directory/config.json`` (ValueError naming the file otherwise)."""
    path = Path(directory) / CONFIG_FILE
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON config ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of LMConfig fields")
    return values


def lm_config(directory: str | Path, rotary: dict[str, Any] | None = None) -> LMConfig:
    """The ``LMConfig`` saved in ``directory``, its rotary config replaced by ``rotary`` if given.

    Raises:
        ValueError: naming config.json, when it is not a valid LMConfig.
    """
    values = read_config(directory)
    if rotary is not None:
        values["rotary"] = dict(rotary)
    try:
        return LMConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{Path(directory) / CONFIG_FILE}: {error}") from None


def check_fits_in_memory(
    config: LMConfig,
    source: str | Path,
    device: str | torch.device,
    bytes_per_parameter: int | None = None,
    purpose: str = "to load",
) -> int:
    """Refuse a model the machine cannot hold; return its parameter count.

    Counted on the meta device (nothing allocated). Loading needs ``LOAD_BYTES_PER_PARAMETER``
    bytes per parameter of host memory (training, the caller's ``bytes_per_parameter``), and 4
    of device memory on a GPU.

    Raises:
        ValueError: naming ``source`` (the config file or the flags), the size and the memory.
    """
    per_parameter = bytes_per_parameter or LOAD_BYTES_PER_PARAMETER
    available = physical_memory_bytes()
    try:
        count = parameter_count(config)
    except RuntimeError as error:  # a tensor of more than 2**63 bytes, even on the meta device
        if "overflow" not in str(error):
            raise
        memory = f"this machine's {gigabytes(available)}" if available else "any machine's memory"
        raise ValueError(
            f"{source}: the model it describes is far beyond {memory} (one of its tensors alone "
            f"would exceed 2**63 bytes)"
        ) from None
    needed = count * per_parameter
    if available is not None and needed > available:
        raise ValueError(
            f"{source}: a model of {count:,} parameters needs about {gigabytes(needed)} "
            f"{purpose}, more than this machine's {gigabytes(available)} of memory"
        )
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
        if count * 4 > total:
            raise ValueError(
                f"{source}: a model of {count:,} parameters needs {gigabytes(count * 4)} on "
                f"{device}, which has {gigabytes(total)}"
            )
    return count


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file holds, read from its header and checked against the
    file's size (nothing else is read).

    Raises:
        ValueError: naming the file, when it is truncated or not a safetensors file.
    """
    path = Path(path)

    def refuse(detail: str) -> ValueError:
        return ValueError(
            f"{path}: not a complete safetensors file ({detail}); expected the weights that "
            f"save_pretrained writes"
        )

    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise refuse(f"{size} bytes, shorter than the 8-byte header length")
        header_length = int.from_bytes(prefix, "little")
        if header_length > min(size - 8, _HEADER_LIMIT):
            raise refuse(f"its header claims {header_length:,} bytes, the file has {size:,}")
        raw = f.read(header_length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a JSON object")
    header.pop("__metadata__", None)
    shapes, data_end = {}, 0
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            expected = _DTYPE_BYTES[dtype] * math.prod(shape)
        except (KeyError, TypeError, ValueError):
            raise refuse(f"tensor {name!r} has no valid dtype, shape and offsets") from None
        if end - begin != expected or begin < 0:
            raise refuse(f"tensor {name!r} spans {end - begin} bytes for {dtype} {shape}")
        shapes[name] = tuple(shape)
        data_end = max(data_end, end)
    if 8 + header_length + data_end != size:
        raise refuse(
            f"its header describes {8 + header_length + data_end:,} bytes, the file has {size:,}"
        )
    return shapes


def _shared_groups(module: nn.Module) -> list[list[str]]:
    """The names of ``module.state_dict()`` grouped by the tensor they hold (tied weights share
    one group; views into one buffer at different offsets do not), in state-dict order."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in module.state_dict().items():
        identity = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        groups.setdefault(identity, []).append(name)
    return list(groups.values())


def save_weights(module: nn.Module, path: str | Path) -> None:
    """Write ``module.state_dict()`` to a safetensors file, storing each shared tensor once.

    Tied weights are stored under their first name; the other names are recorded in the file's
    metadata (``"aliases"``: JSON ``{alias: stored name}``) and restored by ``load_weights``
    from the module's own tying. Parameters that are views into one buffer (cuDNN's flattened
    RNN weights) are accepted: each stored tensor is copied to its own CPU memory. The one
    weight writer of selrope: ``save_pretrained`` and the trainer's checkpoints call it.
    """
    from safetensors.torch import save_file

    state = module.state_dict()
    tensors, aliases = {}, {}
    for names in _shared_groups(module):
        tensors[names[0]] = state[names[0]].detach().to("cpu", copy=True).contiguous()
        aliases.update({alias: names[0] for alias in names[1:]})
    # One metadata key: safetensors writes the metadata map in no fixed order, and the same model
    # must give the same bytes.
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(module: nn.Module, path: str | Path, source: str | Path | None = None) -> None:
    """Load a safetensors file into ``module`` (strict: every tensor must fit).

    Reads files written by ``save_weights`` and by ``safetensors.torch.save_model`` (earlier
    releases' ``save_pretrained``): a tied group of names needs any one of them in the file.

    Args:
        module: the model to fill; its parameters keep their devices and dtypes.
        path: the safetensors file.
        source: what describes the module, for messages (e.g. its config.json).

    Raises:
        ValueError: one line naming the file: truncated / not safetensors, or tensors of another
            model (a missing or extra name, another shape).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    shapes = weight_shapes(path)
    state = module.state_dict()
    described = f"the model {source} describes" if source is not None else "the model"
    unexpected = sorted(set(shapes) - set(state))
    if unexpected:
        raise ValueError(
            f"{path}: weights of another model: {described} has no tensor {unexpected[0]!r} "
            f"({len(unexpected)} such)"
        )
    sources = {}
    for names in _shared_groups(module):
        stored = [name for name in names if name in shapes]
        if not stored:
            raise ValueError(f"{path}: weights of another model: no tensor {names[0]!r}")
        for name in stored:
            if shapes[name] != tuple(state[name].shape):
                raise ValueError(
                    f"{path}: weights of another model: {name} has shape {list(shapes[name])}, "
                    f"{described} expects {list(state[name].shape)}"
                )
        sources.update({name: stored[0] for name in names})
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:  # the header check passed; the data did not
        raise ValueError(f"{path}: unreadable safetensors file ({error})") from None
    for name, stored in sources.items():
        if name in tensors and name != stored and not torch.equal(tensors[name], tensors[stored]):
            raise ValueError(
                f"{path}: weights of another model: {name} and {stored} differ, but {described} "
                f"ties them"
            )
    module.load_state_dict({name: tensors[stored] for name, stored in sources.items()})


def save_pretrained(model: LanguageModel, directory: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` (``save_weights``) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_type": MODEL_TYPE, **model.config.to_dict()}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_weights(model, directory / WEIGHTS_FILE)


def load_pretrained(
    path: str | Path,
    device: str | torch.device = "cpu",
    rotary: dict[str, Any] | None = None,
    config: LMConfig | None = None,
) -> LoadedModel:
    """Load a model directory or a run folder (its ``model/``), checked before allocating.

    Args:
        path: a directory written by ``save_pretrained``, or a run folder holding one in
            ``model/``.
        device: where the model goes.
        rotary: a rotary config replacing the saved one (e.g. RoPE with a context extension);
            the weights must still fit.
        config: an ``LMConfig`` to use instead of the saved one (the HF bridge's ``config=``).

    Returns:
        ``LoadedModel(model (eval mode), config, directory, tokenizer_file or None)``.

    Raises:
        ValueError: one line naming the file: no model there, an invalid config, a model beyond
            the machine's memory, a truncated weights file, weights of another shape.
    """
    directory = model_directory(path)
    if config is None:
        config = lm_config(directory, rotary)
    check_fits_in_memory(config, directory / CONFIG_FILE, device)
    with torch.random.fork_rng(devices=[]):  # the initialisation is overwritten below
        model = LanguageModel(config)
    load_weights(model, directory / WEIGHTS_FILE, source=directory / CONFIG_FILE)
    tokenizer_file = directory / TOKENIZER_FILE
    return LoadedModel(
        model.to(device).eval(),
        config,
        directory,
        tokenizer_file if tokenizer_file.is_file() else None,
    )


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_same_tokenizer(model_dir: str | Path, data_dir: str | Path, flag: str = "--data") -> None:
    """Refuse a corpus whose ``tokenizer.json`` is not the one saved beside the model.

    Compared by the files' sha256 (a run copies the corpus tokenizer byte for byte). A model
    directory without ``tokenizer.json``, or a corpus without one, cannot be checked and passes.

    Raises:
        ValueError: naming ``flag``, the corpus and the model directory.
    """
    saved, corpus = Path(model_dir) / TOKENIZER_FILE, Path(data_dir) / TOKENIZER_FILE
    if not (saved.is_file() and corpus.is_file()):
        return
    saved_hash, corpus_hash = file_sha256(saved), file_sha256(corpus)
    if saved_hash != corpus_hash:
        raise ValueError(
            f"{flag} {data_dir}: its {TOKENIZER_FILE} (sha256 {corpus_hash[:12]}) is not the one "
            f"saved beside the model in {model_dir} (sha256 {saved_hash[:12]}): the model was "
            f"trained on another tokenizer"
        )
