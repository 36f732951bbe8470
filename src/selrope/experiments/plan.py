"""What a training run will cost, from its configs alone (``selrope plan``).

``plan_run(model, train, seq_len, hardware)`` is a pure function of the configs: it counts the
parameters on the meta device (nothing allocated, no data read) and returns a ``RunPlan``.
``configs_for_plan(sections, vocab_size)`` resolves the configs of ``selrope train``'s options
(the same path as ``build_run``), reading a corpus' vocabulary from its manifest and tokenizer.

FLOPs per token of one forward pass (matrix products only; norms, gates, activations, the
depthwise short convs and the loss are elementwise and left out). A token of a row of T tokens:

- projections: 2 x (inputs x outputs) of every ``nn.Linear`` a token passes through, and 2 x
  the weights of Selective RoPE's per-head projection, reported as the mixers' projections
  (q/k/v/o, gates), the MLP (SwiGLU: 3 matrices of d x ``LMConfig.mlp_hidden_size`` h, 6 d h a
  layer; GPT-2's GELU MLP: 2, 4 d h),
  the rotary embedding's projections, and the LM head (2 d V, tied or not);
- sequence mixing per layer, H heads of q/k width K and v width V:
  softmax attention and FoX ``T H (K + V)`` (QK and AV, each ``2 T H K``, halved for the causal
  mask: ``2 T d`` for K = V = d / H); chunked GLA ``H (4 K V + 2 C (K + V))`` (the chunk's state
  update and the state's readout, the intra-chunk scores and their product with v, at chunk
  length C); chunked Gated DeltaNet ``H (6 K V + 4 C K + 2 C V + C (K + V))`` (k k^T, q k^T,
  the triangular solve, W_k S, k^T u, q S, and the scores times u); the loop forms
  ``4 H K V`` (GLA) and ``6 H K V`` (Gated DeltaNet). The chunked forms count every token of the
  last chunk, padded to C, and C shrinks for short rows as the ops do
  (``effective_chunk_size``).

Training FLOPs per token are 3 x forward (the backward pass of a matrix product is two products
of the same size); tests/experiments/test_plan.py checks the count against
``torch.utils.flop_counter.FlopCounterMode`` over a forward and backward pass.

Memory per GPU, for P parameters, N GPUs (data parallel over all of them) and a micro-batch of b
rows: weights (float32) 4P, gradients (float32) 4P, AdamW's two moments (float32) 8P, divided by N
under FSDP; buffers: DDP's gradient buckets (4P, beside the gradients, for N > 1), or FSDP's
gathered parameters of two units (the one in use and the prefetched one; a unit is a block, the
embedding or the head) in the compute dtype plus one unit's unsharded float32 gradients. Activations
are what the backward pass keeps, per token: in every block the two norm inputs (float32 residual
stream) and outputs, the MLP's 3 h (SwiGLU; 2 h for the GELU MLP), and the mixer's tensors in the
compute dtype (2 bytes under bf16, else 4): attention and FoX q, k, v and the output (2 H K + 2 H
V); GLA / Gated DeltaNet q, k, v before and after their short convs, the rotated q and k and the
gated output's three tensors (6 H K + 5 H V), the decays in float32 and the chunk states ``H K V /
C`` in float32; an input-dependent rotary embedding (CARoPE, Selective RoPE) adds 4 float32 tensors
of its H K / 2 angles; then the logits three times (compute dtype, their float32 copy and the saved
log-softmax). With activation checkpointing (one checkpoint per block) only the blocks' float32
inputs stay, plus one block's activations while it is recomputed. An estimate from the shapes:
kernels that recompute (fla's) keep less, PyTorch's chunked forms more.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selrope.data import open_corpus
from selrope.layers.blocks import head_widths
from selrope.models import LanguageModel, LMConfig
from selrope.models.config import MixerConfig
from selrope.ops.recurrence import effective_chunk_size
from selrope.rotary.selective import PerHeadProjection
from selrope.tasks import task_spec
from selrope.training import TrainConfig

from .config import build_run, model_and_train_configs

H100_BF16_FLOPS = 989e12  # H100 / H200 SXM, bf16 dense tensor cores
H100_MEMORY_GB = 80.0
DEFAULT_MFU = 0.4
_FLOAT = 4
_SOFTMAX_MIXERS = ("attention", "fox")
_INPUT_DEPENDENT_ROTARIES = ("carope", "selective")


@dataclass(frozen=True)
class Hardware:
    """The machines a plan is for.

    Attributes:
        gpus: N, data-parallel GPUs.
        mfu: the model FLOPs utilisation the time assumes, in (0, 1].
        gpu_flops: each GPU's peak FLOP/s in the training precision.
        gpu_memory_gb: each GPU's memory, in GB (1e9 bytes).
    """

    gpus: int = 1
    mfu: float = DEFAULT_MFU
    gpu_flops: float = H100_BF16_FLOPS
    gpu_memory_gb: float = H100_MEMORY_GB

    def __post_init__(self) -> None:
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise ValueError(f"--gpus must be a positive integer; got {self.gpus!r}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"--mfu must be in (0, 1]; got {self.mfu!r}")
        for flag, value in (("--gpu-flops", self.gpu_flops), ("--gpu-memory", self.gpu_memory_gb)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a positive number; got {value!r}")


@dataclass(frozen=True)
class FlopsPerToken:
    """Forward FLOPs per token, by part (see the module docstring); ``training`` is 3x."""

    head: int
    mixer_projections: int
    mlp: int
    rotary: int
    sequence_mixing: int

    @property
    def forward(self) -> int:
        return self.head + self.mixer_projections + self.mlp + self.rotary + self.sequence_mixing

    @property
    def training(self) -> int:
        return 3 * self.forward


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one parallelism (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    buffers: int
    activations: int
    activations_checkpointed: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.buffers + self.activations

    @property
    def total_checkpointed(self) -> int:
        return self.total - self.activations + self.activations_checkpointed


@dataclass(frozen=True)
class RunPlan:
    """What a run costs.

    Attributes:
        parameters: every parameter, counted once (``models.parameter_count``).
        embedding_parameters: the token (and learned position) embeddings and the LM head.
        flops_per_token: forward FLOPs per token by part.
        seq_len, steps, batch_size: the run's row length, optimizer steps and global batch.
        micro_batch_size: rows per forward pass and GPU.
        tokens: tokens the run trains on (steps x batch_size x seq_len).
        ddp, fsdp: memory per GPU.
        hardware: the GPUs the time and the memory are for.
    """

    parameters: int
    embedding_parameters: int
    flops_per_token: FlopsPerToken
    seq_len: int
    steps: int
    batch_size: int
    micro_batch_size: int
    tokens: int
    ddp: Memory
    fsdp: Memory
    hardware: Hardware

    @property
    def other_parameters(self) -> int:
        return self.parameters - self.embedding_parameters

    @property
    def tokens_per_parameter(self) -> float:
        return self.tokens / self.parameters

    @property
    def training_flops(self) -> float:
        return float(self.flops_per_token.training) * self.tokens

    @property
    def seconds(self) -> float:
        """Training time at ``hardware.mfu`` of the peak of ``hardware.gpus`` GPUs."""
        hw = self.hardware
        return self.training_flops / (hw.gpus * hw.gpu_flops * hw.mfu)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: every field, with the totals beside the parts."""
        flops = dataclasses.asdict(self.flops_per_token)
        flops.update(forward=self.flops_per_token.forward, training=self.flops_per_token.training)
        memory = {
            name: {
                **dataclasses.asdict(m),
                "total": m.total,
                "total_checkpointed": m.total_checkpointed,
            }
            for name, m in (("ddp", self.ddp), ("fsdp", self.fsdp))
        }
        return {
            "parameters": self.parameters,
            "embedding_parameters": self.embedding_parameters,
            "other_parameters": self.other_parameters,
            "flops_per_token": flops,
            "seq_len": self.seq_len,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "micro_batch_size": self.micro_batch_size,
            "tokens": self.tokens,
            "tokens_per_parameter": self.tokens_per_parameter,
            "training_flops": self.training_flops,
            "seconds": self.seconds,
            "memory_bytes": memory,
            "hardware": dataclasses.asdict(self.hardware),
        }


def plan_run(model: LMConfig, train: TrainConfig, seq_len: int, hardware: Hardware) -> RunPlan:
    """The cost of training ``model`` by ``train`` on rows of ``seq_len`` tokens.

    Raises:
        ValueError: a global batch that ``hardware.gpus`` x the micro-batch does not divide,
            naming --gpus.
    """
    try:
        micro_steps = train.micro_steps(hardware.gpus)
    except ValueError as error:
        raise ValueError(f"--gpus {hardware.gpus}: {error}") from None
    micro_batch = train.batch_size // hardware.gpus // micro_steps
    with torch.device("meta"):
        lm = LanguageModel(model)
    parameters = sum(p.numel() for p in lm.parameters())
    embedding = _embedding_parameters(lm)
    units = [_count(lm.embedding), _count(lm.lm_head) + _count(lm.final_norm)]
    units += [_count(block) for block in lm.blocks]
    compute_bytes = 2 if train.precision in ("bf16", "auto") else 4  # auto: bf16 on a GPU
    activations, checkpointed = activation_bytes(model, micro_batch, seq_len, compute_bytes)
    N = hardware.gpus
    ddp = Memory(
        weights=4 * parameters,
        gradients=4 * parameters,
        optimizer=8 * parameters,
        buffers=4 * parameters if N > 1 else 0,
        activations=activations,
        activations_checkpointed=checkpointed,
    )
    fsdp = Memory(
        weights=-(-4 * parameters // N),
        gradients=-(-4 * parameters // N),
        optimizer=-(-8 * parameters // N),
        buffers=max(units) * (2 * compute_bytes + _FLOAT) if N > 1 else 0,
        activations=activations,
        activations_checkpointed=checkpointed,
    )
    return RunPlan(
        parameters=parameters,
        embedding_parameters=embedding,
        flops_per_token=flops_per_token(model, seq_len, lm),
        seq_len=seq_len,
        steps=train.steps,
        batch_size=train.batch_size,
        micro_batch_size=micro_batch,
        tokens=train.steps * train.batch_size * seq_len,
        ddp=ddp,
        fsdp=fsdp,
        hardware=hardware,
    )


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _embedding_parameters(lm: LanguageModel) -> int:
    tables = [lm.embedding, lm.lm_head, lm.position_embedding]
    unique = {id(p): p for m in tables if m is not None for p in m.parameters()}
    return sum(p.numel() for p in unique.values())


def _matmul_flops(module: nn.Module) -> int:
    """2 x the multiply-adds per token of the module's projections (Linear, per-head)."""
    total = 0
    for part in module.modules():
        if isinstance(part, nn.Linear):
            total += 2 * part.in_features * part.out_features
        elif isinstance(part, PerHeadProjection):
            total += 2 * part.weight.numel()
    return total


def flops_per_token(
    model: LMConfig, seq_len: int, lm: LanguageModel | None = None
) -> FlopsPerToken:
    """Forward FLOPs per token of rows of ``seq_len`` tokens (formulas: the module docstring).

    Args:
        model: the model config.
        seq_len: T, tokens per row.
        lm: the model on the meta device, if already built (else built here, on meta).
    """
    if lm is None:
        with torch.device("meta"):
            lm = LanguageModel(model)
    mixer_projections = mlp = rotary = 0
    for block in lm.blocks:
        rotary_modules = [m for name, m in block.mixer.named_modules() if name.endswith("rotary")]
        rotary_flops = sum(_matmul_flops(m) for m in rotary_modules)
        rotary += rotary_flops
        mixer_projections += _matmul_flops(block.mixer) - rotary_flops
        mlp += _matmul_flops(block.mlp) if block.mlp is not None else 0
    mixing = sum(
        sequence_mixing_flops(mixer, model.d_model, model.n_heads, seq_len)
        for mixer in model.layer_mixer_configs()
    )
    return FlopsPerToken(
        head=_matmul_flops(lm.lm_head),
        mixer_projections=mixer_projections,
        mlp=mlp,
        rotary=rotary,
        sequence_mixing=mixing,
    )


def _head_dims(mixer: MixerConfig, d: int, H: int) -> tuple[int, int]:
    if mixer.kind in _SOFTMAX_MIXERS:
        return d // H, d // H
    return head_widths(d, H, mixer.expand_k, mixer.expand_v, mixer.form)


def sequence_mixing_flops(mixer: MixerConfig, d: int, H: int, T: int) -> int:
    """Forward FLOPs per token of one layer's sequence mixing (the module docstring)."""
    K, V = _head_dims(mixer, d, H)
    if mixer.kind in _SOFTMAX_MIXERS:
        return T * H * (K + V)  # 2 T H (K + V) for QK and AV, halved by the causal mask
    if mixer.form != "chunk":
        return H * (4 if mixer.kind == "gla" else 6) * K * V
    C = effective_chunk_size(T, mixer.chunk_size)
    if mixer.kind == "gla":
        per_token = 4 * K * V + 2 * C * (K + V)
    else:
        per_token = 6 * K * V + 4 * C * K + 2 * C * V + C * (K + V)
    padded = -(-T // C) * C
    return H * per_token * padded // T


def activation_bytes(
    model: LMConfig, micro_batch: int, seq_len: int, compute_bytes: int
) -> tuple[int, int]:
    """Bytes of activations one micro-batch keeps for its backward pass, without and with
    activation checkpointing per block (the estimate of the module docstring).

    Args:
        model: the model config.
        micro_batch: b, rows per forward pass.
        seq_len: T, tokens per row.
        compute_bytes: 2 under bf16 autocast, 4 in float32.
    """
    d, H, c = model.d_model, model.n_heads, compute_bytes
    tokens = micro_batch * seq_len
    rotary = model.rotary.get("type", "nope") in _INPUT_DEPENDENT_ROTARIES
    blocks = []
    for mixer in model.layer_mixer_configs():
        K, V = _head_dims(mixer, d, H)
        mlp_tensors = 3 if model.mlp == "swiglu" else 2
        per_token = 2 * d * _FLOAT + 2 * d * c + mlp_tensors * model.mlp_hidden_size * c
        if mixer.kind in _SOFTMAX_MIXERS:
            per_token += (2 * H * K + 2 * H * V) * c
        else:
            C = effective_chunk_size(seq_len, mixer.chunk_size)
            decays = H * K if mixer.kind == "gla" else 2 * H
            per_token += (6 * H * K + 5 * H * V) * c + (decays + H * K * V / C) * _FLOAT
        if rotary:
            per_token += 4 * (H * K // 2) * _FLOAT
        blocks.append(per_token * tokens)
    head = tokens * (d * (_FLOAT + c) + model.vocab_size * (c + 2 * _FLOAT))
    full = sum(blocks) + head
    checkpointed = len(blocks) * tokens * d * _FLOAT + max(blocks) + head
    return int(full), int(checkpointed)


def configs_for_plan(
    sections: dict[str, dict[str, Any]], vocab_size: int | None = None
) -> tuple[LMConfig, TrainConfig, int]:
    """The model and training configs and the row length of ``selrope train``'s options, sorted
    by section, without the model's weights or the corpus' tokens.

    The vocabulary: ``--task lm`` reads its corpus' (``--data``: the manifest and tokenizer, via
    ``open_corpus``, padded to ``vocab_size`` if given), else takes ``vocab_size``; a synthetic
    task builds its (small, in-memory) data as ``build_run`` does.

    Raises:
        ValueError: neither --data nor --vocab-size for a corpus task; --vocab-size for a task
            with a vocabulary of its own; any value a config refuses, naming it.
    """
    run = sections.get("run", {})
    spec = task_spec(run.get("task", "state_tracking"))
    task = sections.get("task", {})
    if "data" not in spec.defaults():
        if vocab_size is not None:
            raise ValueError(
                f"--vocab-size applies to corpus tasks (--task lm); --task {spec.name} has its own"
            )
        config, data = build_run(sections)
        return config.model, config.train, data.train_length
    vocab = vocab_size if vocab_size is not None else task.get("vocab_size")
    if task.get("data"):
        vocab = open_corpus(task["data"], vocab_size=vocab, eos_id=task.get("eos_id")).vocab_size
    elif vocab is None:
        raise ValueError(
            "--vocab-size: give the vocabulary, or --data a prepared corpus to read it from"
        )
    model, train = model_and_train_configs(sections, vocab)
    seq_len = task.get("seq_len", spec.defaults()["seq_len"])
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"--seq-len must be a positive integer; got {seq_len!r}")
    return model, train, seq_len
