"""GPT-2's architecture (LayerNorm, the GELU MLP with biases, biased attention projections,
learned positions, tied embeddings) as LMConfig options: the same logits as transformers'
GPT2LMHeadModel with the same weights, and GPT-2's parameter counts."""

from __future__ import annotations

import pytest
import torch

from selrope.models import LanguageModel, LMConfig, parameter_count

transformers = pytest.importorskip("transformers")

GPT2_STYLE = {
    "mixer": {"kind": "attention", "bias": True},
    "norm": "layernorm",
    "mlp": "gelu",
    "norm_eps": 1e-5,
    "tie_embeddings": True,
}


def gpt2_config(**overrides) -> LMConfig:
    values = {"vocab_size": 50257, "d_model": 768, "n_layers": 12, "n_heads": 12, **GPT2_STYLE}
    return LMConfig(**{**values, **overrides})


def reference_count(**shape) -> int:
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**shape))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("shape", "ours"),
    [
        ({}, {}),  # GPT-2 small: 124,439,808
        ({"n_embd": 1024, "n_layer": 24, "n_head": 16}, {"d_model": 1024, "n_layers": 24}),
    ],
    ids=["small", "medium"],
)
def test_parameter_counts_are_gpt2s(shape, ours):
    expected = reference_count(**shape)
    learned = gpt2_config(**ours, n_heads=shape.get("n_head", 12), absolute_position="learned",
                          max_positions=1024)  # fmt: skip
    assert parameter_count(learned) == expected
    # RoPE-family models have no position table: GPT-2 minus its 1,024 learned positions.
    rotary = gpt2_config(**ours, n_heads=shape.get("n_head", 12), rotary={"type": "rope"})
    assert parameter_count(rotary) == expected - 1024 * learned.d_model
    if not shape:
        assert parameter_count(rotary) == 123_653_376


def copy_into_gpt2(model: LanguageModel, reference) -> None:
    """Our weights into a transformers GPT2LMHeadModel (its Conv1D stores W^T)."""
    with torch.no_grad():
        reference.transformer.wte.weight.copy_(model.embedding.weight)
        reference.transformer.wpe.weight.copy_(model.position_embedding.table.weight)
        for block, theirs in zip(model.blocks, reference.transformer.h, strict=True):
            attention = block.mixer
            for ours_norm, their_norm in ((block.mixer_norm, theirs.ln_1),
                                          (block.mlp_norm, theirs.ln_2)):  # fmt: skip
                their_norm.weight.copy_(ours_norm.weight)
                their_norm.bias.copy_(ours_norm.bias)
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            theirs.attn.c_attn.weight.copy_(torch.cat([p.weight for p in projections]).T)
            theirs.attn.c_attn.bias.copy_(torch.cat([p.bias for p in projections]))
            theirs.attn.c_proj.weight.copy_(attention.o_proj.weight.T)
            theirs.attn.c_proj.bias.copy_(attention.o_proj.bias)
            theirs.mlp.c_fc.weight.copy_(block.mlp.up_proj.weight.T)
            theirs.mlp.c_fc.bias.copy_(block.mlp.up_proj.bias)
            theirs.mlp.c_proj.weight.copy_(block.mlp.down_proj.weight.T)
            theirs.mlp.c_proj.bias.copy_(block.mlp.down_proj.bias)
        reference.transformer.ln_f.weight.copy_(model.final_norm.weight)
        reference.transformer.ln_f.bias.copy_(model.final_norm.bias)


def test_logits_equal_transformers_gpt2_with_the_same_weights():
    torch.manual_seed(0)
    config = LMConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4,
                      absolute_position="learned", max_positions=24, **GPT2_STYLE)  # fmt: skip
    model = LanguageModel(config).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():  # biases and norm scales off 0 and 1
            parameter.add_(0.1 * torch.randn_like(parameter))
    reference_config = transformers.GPT2Config(
        vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new",
    )  # fmt: skip
    reference = transformers.GPT2LMHeadModel(reference_config).double().eval()
    copy_into_gpt2(model, reference)
    ids = torch.randint(0, 61, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), reference(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)


def test_gpt2_style_model_decodes_and_packs_like_the_parallel_pass():
    torch.manual_seed(0)
    config = LMConfig(vocab_size=23, d_model=32, n_layers=2, n_heads=2,
                      rotary={"type": "carope"}, **GPT2_STYLE)  # fmt: skip
    model = LanguageModel(config).double().eval()
    ids = torch.randint(0, 23, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model(ids[:, :5], use_cache=True)
        steps = [logits]
        for t in range(5, 13):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
        packed = model(ids[:1], cu_seqlens=torch.tensor([0, 6, 13]))
        alone = torch.cat([model(ids[:1, :6]), model(ids[:1, 6:])], dim=1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(packed, alone, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm": "batchnorm"}, "norm must be one of rmsnorm, layernorm; got 'batchnorm'"),
        ({"mlp": "relu"}, "mlp must be one of swiglu, gelu; got 'relu'"),
        ({"mixer": {"kind": "attention", "bias": 1}}, r"bias must be"),
        ({"mixer": {"kind": "gla", "bias": True}}, r"bias"),
    ],
)
def test_bad_architecture_options_are_one_line_errors(overrides, message):
    values = {"vocab_size": 8, "d_model": 16, "n_heads": 2, **overrides}
    with pytest.raises(ValueError, match=message) as error:
        LMConfig.from_dict(values)
    assert "\n" not in str(error.value)
