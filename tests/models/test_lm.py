"""LanguageModel: parallel == prefill + decoding, save/load, overfitting, config errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import MIXERS, ROTARIES, named_mixer, tiny_model

from selrope.models import LanguageModel, LMConfig, lm_loss, parameter_count
from selrope.rotary import SELECTIVE_LM_RECIPE

# The CUDA tests at the end run the same code on a GPU machine; CI is CPU-only.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("rotary", list(ROTARIES))
@pytest.mark.parametrize("mixer", MIXERS)
def test_parallel_equals_prefill_then_token_by_token(mixer: str, rotary: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary])
    ids = torch.randint(0, 23, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model(ids[:, :9], use_cache=True)
        steps = [logits]
        for t in range(9, ids.shape[1]):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mixer", MIXERS)
def test_hybrid_and_embedding_source_decode(mixer: str) -> None:
    pattern = [mixer, "attention"]
    model = tiny_model(pattern, ROTARIES["carope"], rotary_source="embedding")
    ids = torch.randint(0, 23, (3, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        _, cache = model(ids[:, :5], use_cache=True)
        chunk, cache = model(ids[:, 5:11], cache)
        rest, _ = model(ids[:, 11:], cache)
    torch.testing.assert_close(torch.cat([full[:, :5], chunk, rest], 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mixer", ["gla", "gdn"])
def test_chunk_and_recurrent_forms_agree(mixer: str) -> None:
    chunked = tiny_model(mixer, ROTARIES["selective"]).double()
    recurrent = tiny_model(mixer, ROTARIES["selective"], form="recurrent").double()
    recurrent.load_state_dict(chunked.state_dict())
    ids = torch.randint(0, 23, (2, 19), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chunked(ids), recurrent(ids), atol=1e-10, rtol=1e-9)


def test_generate_greedy_matches_full_recompute() -> None:
    model = tiny_model("gla", ROTARIES["selective"])
    prompt = torch.randint(0, 23, (2, 6), generator=torch.Generator().manual_seed(4))
    out = model.generate(prompt, max_new_tokens=7)
    assert out.shape == (2, 13)
    assert torch.equal(out[:, :6], prompt)
    with torch.no_grad():
        for t in range(6, 13):
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_generate_stops_rows_at_eos() -> None:
    model = tiny_model("attention", ROTARIES["rope"])
    prompt = torch.randint(0, 23, (3, 4), generator=torch.Generator().manual_seed(5))
    greedy = model.generate(prompt, max_new_tokens=6)
    eos = int(greedy[0, 5])  # the second generated token of row 0
    out = model.generate(prompt, max_new_tokens=6, eos_id=eos)
    first = int((out[0, 4:] == eos).nonzero()[0])
    assert (out[0, 4 + first :] == eos).all()
    sampled = model.generate(
        prompt,
        max_new_tokens=5,
        temperature=0.8,
        top_k=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert sampled.shape == (3, 9)


@pytest.mark.parametrize("mixer", MIXERS)
def test_save_load_is_bit_exact(tmp_path, mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"], tie_embeddings=True)
    model.save_pretrained(tmp_path)
    loaded = LanguageModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 23, (2, 9))
    assert torch.equal(model(ids), loaded(ids))
    assert loaded.lm_head.weight is loaded.embedding.weight
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))


@pytest.mark.parametrize("mixer", MIXERS)
def test_tiny_model_overfits_one_batch(mixer: str) -> None:
    torch.manual_seed(0)
    model = LanguageModel(
        LMConfig.from_dict(
            dict(
                vocab_size=16,
                d_model=32,
                n_layers=1,
                n_heads=2,
                mixer=named_mixer(mixer),
                rotary=ROTARIES["rope"],
                chunk_size=16,
            )
        )
    )
    ids = torch.randint(0, 16, (4, 17), generator=torch.Generator().manual_seed(6))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(300):
        loss = lm_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05


def test_lm_loss_ignores_minus_100() -> None:
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    expected = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 0], logits[0, 2], logits[1, 2]]), torch.tensor([1, 2, 4])
    )
    torch.testing.assert_close(lm_loss(logits, targets), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "n_heads must divide d_model"),
        ({"mixer": "mamba"}, "mixer must be one of"),
        ({"mixer": ["gla"], "n_layers": 2}, "one entry per layer"),
        ({"rotary_source": "query"}, "rotary_source must be one of"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
    ],
)
def test_bad_configs_raise(overrides: dict, message: str) -> None:
    values = {"vocab_size": 10, "d_model": 32, "n_heads": 4, **overrides}
    with pytest.raises(ValueError, match=message):
        LMConfig.from_dict(dict(**values))


def test_unknown_config_key_and_bad_input_ids() -> None:
    with pytest.raises(ValueError, match="unknown LMConfig keys"):
        LMConfig.from_dict({"vocab_size": 10, "heads": 3})
    model = tiny_model("attention", ROTARIES["nope"])
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(torch.randn(2, 3))


@needs_cuda
@pytest.mark.parametrize("rotary", ["nope", "rope", "carope", "selective"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_cuda_matches_cpu_and_decodes(mixer: str, rotary: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary])
    ids = torch.randint(0, 23, (2, 70), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(ids)
        model = model.cuda()
        gpu_ids = ids.cuda()
        full = model(gpu_ids)
        logits, cache = model(gpu_ids[:, :40], use_cache=True)
        steps = [logits]
        for t in range(40, 70):
            logits, cache = model(gpu_ids[:, t : t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(full.cpu(), cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("mixer", MIXERS)
def test_bf16_autocast_training_step_is_finite(mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"]).cuda().train()
    ids = torch.randint(0, 23, (4, 130), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids)
    loss = lm_loss(logits[:, :-1], ids[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("mixer", ["attention", "fox", "gla", "gdn"])
@pytest.mark.parametrize(
    "rotary", [{"type": "rope"}, dict(SELECTIVE_LM_RECIPE), {"type": "carope"}]
)
def test_parameter_count_matches_the_built_model_without_allocating(mixer, rotary):
    config = LMConfig(
        vocab_size=50, d_model=16, n_layers=2, n_heads=2, mixer=mixer, rotary=rotary,
        absolute_position="learned", max_positions=32,
    )  # fmt: skip
    expected = sum(p.numel() for p in LanguageModel(config).parameters())
    assert parameter_count(config) == expected
    # Far beyond any machine's memory: counted on the meta device, nothing is allocated.
    huge = dataclasses.replace(config, d_model=2**20, vocab_size=2**20)
    assert parameter_count(huge) > 2**40
