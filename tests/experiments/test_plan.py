"""selrope plan: parameters, the FLOP formula against a brute-force count, memory scaling, the
recipes' plans and the command's one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from selrope.cli import main
from selrope.data import open_corpus, prepare_corpus
from selrope.experiments.plan import (
    Hardware,
    flops_per_token,
    plan_run,
    sequence_mixing_flops,
)
from selrope.models import LanguageModel, LMConfig, parameter_count
from selrope.rotary import SELECTIVE_LM_RECIPE
from selrope.training import TrainConfig

RECIPES = Path(__file__).parents[2] / "configs" / "selective_rope"
NOPE_PARAMETERS = {"gla": 374_672_384, "gdn": 399_724_928, "transformer": 373_867_520}
aten = torch.ops.aten


def tiny(mixer, rotary=None, **model) -> LMConfig:
    options = dict(vocab_size=96, d_model=64, n_layers=2, n_heads=2, mlp_width_rule="two_thirds")
    options.update(mlp_multiple_of=16, mixer=mixer, rotary=rotary or {"type": "nope"}, **model)
    return LMConfig(**options)


def run_plan(argv: list[str], capsys) -> dict:
    main(["plan", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("mixer", ["attention", "gla", "gdn"])
def test_parameters_equal_parameter_count_and_split_off_the_embeddings(mixer, tie):
    config = tiny(mixer, dict(SELECTIVE_LM_RECIPE), tie_embeddings=tie)
    plan = plan_run(config, TrainConfig(steps=10, batch_size=4), 32, Hardware())
    assert plan.parameters == parameter_count(config)
    tables = (1 if tie else 2) * config.vocab_size * config.d_model
    assert plan.embedding_parameters == tables
    assert plan.other_parameters == plan.parameters - tables


# --- FLOPs: the formula against FlopCounterMode ----------------------------------------------


def _per_head_matmul(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[-1]


def _weight_grad(x_shape, grad_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * grad_shape[-1]


def _triangular_solve(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return math.prod(b_shape) * a_shape[-1]  # C^2 N per (C x C) system: half a product


def _cpu_sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_sdpa_backward(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kw) -> int:
    return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


# Ops FlopCounterMode cannot see into on a CPU: SDPA's CPU kernel, Selective RoPE's per-head
# matmul (a custom op), the triangular solve of Gated DeltaNet's chunked form.
OPAQUE_OPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
    torch.ops.selrope.per_head_matmul: _per_head_matmul,
    torch.ops.selrope.per_head_matmul_weight_grad: _weight_grad,
    aten.linalg_solve_triangular: _triangular_solve,
}
# GDN: the triangular solve's backward is not exactly two solves (0.24% of this tiny model's
# count, less at the recipe's widths); everything else agrees to round-off.
TOLERANCE = {"attention": 1e-9, "fox": 1e-9, "gla": 1e-9, "gdn": 0.01}


@pytest.mark.parametrize("rotary", ["nope", "rope", "selective", "carope"])
@pytest.mark.parametrize("mixer", ["attention", "fox", "gla", "gdn"])
def test_training_flops_match_a_brute_force_count(mixer, rotary):
    recipe = dict(SELECTIVE_LM_RECIPE) if rotary == "selective" else {"type": rotary}
    config = tiny({"kind": mixer, "chunk_size": 32} if mixer in ("gla", "gdn") else mixer, recipe)
    B, T = 2, 128
    torch.manual_seed(0)
    model = LanguageModel(config)
    tokens = torch.randint(0, config.vocab_size, (B, T))
    counter = FlopCounterMode(display=False, custom_mapping=OPAQUE_OPS)
    with counter:
        model(tokens).float().logsumexp(-1).mean().backward()
    counted = counter.get_total_flops() / (B * T)
    flops = flops_per_token(config, T)
    predicted = flops.training
    # The counter charges softmax attention the full T x T square, twice the plan's causal
    # count, and SDPA's fused backward 2.5 forwards (it recomputes the scores), not 2.
    if mixer == "attention":
        predicted += 4 * flops.sequence_mixing
    elif mixer == "fox":  # SDPA's math path with a float mask: batched matmuls
        predicted += 3 * flops.sequence_mixing
    assert predicted == pytest.approx(counted, rel=TOLERANCE[mixer])
    assert flops.sequence_mixing > 0 and (flops.rotary > 0) == (rotary in ("selective", "carope"))


def test_flop_parts_follow_the_shapes():
    config = tiny({"kind": "gla", "expand_k": 0.5}, n_layers=3)
    flops = flops_per_token(config, 256)
    d, h, L = config.d_model, config.mlp_hidden_size, config.n_layers
    assert flops.mlp == 6 * d * h * L
    assert flops.head == 2 * d * config.vocab_size
    attention = tiny("attention")
    assert sequence_mixing_flops(attention.mixer, 64, 2, 512) == 2 * 512 * 64  # 2 T d, causal
    # Chunked GLA at T = C: 4 K V + 2 C (K + V) per head.
    gla = tiny({"kind": "gla", "chunk_size": 64}).mixer
    assert sequence_mixing_flops(gla, 64, 2, 64) == 2 * (4 * 32 * 32 + 2 * 64 * 64)


# --- memory ----------------------------------------------------------------------------------


def test_memory_scales_with_the_gpus_and_the_micro_batch():
    config = tiny("gla", dict(SELECTIVE_LM_RECIPE))

    def plan(gpus, micro):
        train = TrainConfig(steps=10, batch_size=16, micro_batch_size=micro, precision="bf16")
        return plan_run(config, train, 256, Hardware(gpus=gpus))

    one, four = plan(1, 2), plan(4, 2)
    P = one.parameters
    assert (one.ddp.weights, one.ddp.gradients, one.ddp.optimizer) == (4 * P, 4 * P, 8 * P)
    assert one.ddp.buffers == 0 and four.ddp.buffers == 4 * P  # DDP's buckets beside the grads
    # DDP replicates everything; FSDP shards weights, gradients and AdamW's moments.
    for name in ("weights", "gradients", "optimizer"):
        assert getattr(four.ddp, name) == getattr(one.ddp, name)
        assert getattr(four.fsdp, name) == pytest.approx(getattr(one.ddp, name) / 4, abs=1)
    assert four.fsdp.total < four.ddp.total
    # Activations are per micro-batch: linear in it, the same for any number of GPUs.
    assert four.ddp.activations == four.fsdp.activations == one.ddp.activations
    double = plan(4, 4)
    assert double.ddp.activations == pytest.approx(2 * four.ddp.activations, rel=1e-9)
    assert 0 < four.ddp.activations_checkpointed < four.ddp.activations
    # A micro-batch left unset is each GPU's share of the global batch.
    assert plan(4, None).micro_batch_size == 4 and plan(1, None).micro_batch_size == 16


def test_time_and_tokens_follow_the_run():
    config = tiny("attention")
    train = TrainConfig(steps=100, batch_size=8)
    slow = plan_run(config, train, 64, Hardware(gpus=1, mfu=0.2, gpu_flops=1e12))
    fast = plan_run(config, train, 64, Hardware(gpus=2, mfu=0.4, gpu_flops=1e12))
    assert slow.tokens == 100 * 8 * 64
    assert slow.tokens_per_parameter == slow.tokens / slow.parameters
    assert slow.seconds == pytest.approx(slow.tokens * slow.flops_per_token.training / 0.2e12)
    assert fast.seconds == pytest.approx(slow.seconds / 4)


# --- the recipes through the command ---------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("lm_*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_plans(recipe, capsys):
    plan = run_plan(["--config", str(recipe), "--vocab-size", "32000", "--gpus", "8"], capsys)
    mixer, position = recipe.stem.split("_")[1:]
    if position == "nope":
        assert plan["parameters"] == NOPE_PARAMETERS[mixer]
    else:  # RoPE adds none; Selective RoPE its projection, conv and gate (under 100K a layer)
        added = plan["parameters"] - NOPE_PARAMETERS[mixer]
        assert (added == 0) if position == "rope" else (0 < added < 24 * 100_000)
    assert plan["embedding_parameters"] == 2 * 32000 * 1024
    assert plan["tokens"] == 12970 * 128 * 4096
    assert plan["micro_batch_size"] == 4
    forward = plan["flops_per_token"]["forward"]
    assert 2 * plan["other_parameters"] < forward < 2.5 * plan["parameters"]
    memory = plan["memory_bytes"]
    assert memory["fsdp"]["total"] < memory["ddp"]["total"]


def test_the_table_names_the_parts(capsys):
    recipe = RECIPES / "lm_gla_selective.yaml"
    main(["plan", "--config", str(recipe), "--vocab-size", "32000", "--gpus", "8"])
    out = capsys.readouterr().out
    for part in ("parameters", "FLOPs per token", "tokens to train", "DDP", "FSDP/8", "time"):
        assert part in out


def test_a_prepared_corpus_gives_the_vocabulary(tmp_path, capsys):
    texts = [tmp_path / f"doc{i}.txt" for i in range(4)]
    for i, text in enumerate(texts):
        text.write_text(f"document {i} with a few words " * 20)
    corpus = tmp_path / "corpus"
    prepare_corpus([str(text) for text in texts], "byte", corpus, progress=False)
    plan = run_plan(["--task", "lm", "--data", str(corpus), "--seq-len", "32"], capsys)
    vocab = open_corpus(corpus).vocab_size
    assert plan["embedding_parameters"] == 2 * vocab * 128
    assert plan["seq_len"] == 32


# --- one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--task", "lm"], "--vocab-size"),
        (["--task", "lm", "--vocab-size", "100", "--gpus", "0"], "--gpus"),
        (["--task", "lm", "--vocab-size", "100", "--mfu", "1.5"], "--mfu"),
        (["--task", "lm", "--vocab-size", "100", "--gpu-flops", "-1"], "--gpu-flops"),
        (["--task", "lm", "--vocab-size", "100", "--batch-size", "8", "--gpus", "3"], "--gpus"),
        (["--task", "lm", "--vocab-size", "0"], "--vocab-size"),
        (["--task", "mqar", "--vocab-size", "100"], "--vocab-size"),
        (["--task", "lm", "--vocab-size", "100", "--d-model", "-4"], "--d-model"),
        (["--task", "lm", "--vocab-size", "100", "--no-such-flag", "1"], "--no-such-flag"),
        (["--task", "lm", "--data", "/no/such/corpus"], "--data"),
    ],
)
def test_errors_are_one_line_naming_the_flag(argv, named, capsys):
    err = usage_error(argv, capsys)
    assert named in err and err.startswith("selrope: error:")
