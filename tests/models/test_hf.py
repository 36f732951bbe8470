"""selrope.models.hf: transformers generate == selrope generate, logits, save/load, tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from tiny_models import MIXERS, ROTARIES, named_mixer  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from selrope.data import EOS_TOKEN, prepare_corpus  # noqa: E402
from selrope.models import LanguageModel, LMConfig  # noqa: E402
from selrope.models.hf import SelropeCache, SelropeConfig, SelropeForCausalLM  # noqa: E402

VOCAB = 23


def tiny_model(mixer: str, rotary: dict, seed: int = 0) -> LanguageModel:
    generator = torch.Generator().manual_seed(seed)
    config = LMConfig.from_dict(
        dict(
            vocab_size=VOCAB,
            d_model=32,
            n_layers=2,
            n_heads=2,
            mixer=named_mixer(mixer),
            rotary=rotary,
            chunk_size=8,
        )
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LanguageModel(config)
    # Move every parameter off its initial value so that greedy decoding is not degenerate.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("rotary", list(ROTARIES))
@pytest.mark.parametrize("mixer", MIXERS)
def test_generate_and_logits_match_selrope(mixer: str, rotary: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary])
    hf_model = SelropeForCausalLM.from_language_model(model).eval()
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    lengths = []  # tokens per forward call: the prompt once, then one token per step
    hook = model.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    hf_tokens = hf_model.generate(ids, max_new_tokens=12, do_sample=False)
    hook.remove()
    assert torch.equal(hf_tokens, model.generate(ids, max_new_tokens=12))
    assert lengths == [7] + [1] * 11
    with torch.no_grad():
        torch.testing.assert_close(hf_model(hf_tokens).logits, model(hf_tokens), atol=1e-5, rtol=0)


def test_cache_continues_and_beam_reorder() -> None:
    model = tiny_model("gla", ROTARIES["selective"])
    hf_model = SelropeForCausalLM.from_language_model(model)
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        first = hf_model(ids[:, :6], use_cache=True)
        assert isinstance(first.cache, SelropeCache) and first.cache.get_seq_length() == 6
        first.cache.reorder_cache(torch.tensor([2, 0, 1]))
        rest = hf_model(ids[[2, 0, 1], 6:], cache=first.cache)
    torch.testing.assert_close(rest.logits, full[[2, 0, 1], 6:], atol=1e-5, rtol=0)
    assert rest.cache.get_seq_length() == 10


def test_labels_give_the_shifted_loss_and_pads_between_real_tokens_are_refused() -> None:
    model = tiny_model("attention", ROTARIES["rope"])
    hf_model = SelropeForCausalLM.from_language_model(model)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    out = hf_model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected)
    holes = torch.ones_like(ids)
    holes[0, 3:5] = 0
    with pytest.raises(ValueError, match="no padding mask with pads between real tokens"):
        hf_model(ids, attention_mask=holes)
    cached_pads = hf_model(ids[:, :2], attention_mask=torch.zeros_like(ids[:, :2]), use_cache=True)
    with pytest.raises(ValueError, match="no padding mask with real tokens after a cached pad"):
        hf_model(ids[:, 2:3], attention_mask=torch.tensor([[0, 0, 1]] * 2), cache=cached_pads.cache)


def left_padded(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(row) for row in rows)
    ids = torch.full((len(rows), T), pad_id)
    mask = torch.zeros(len(rows), T, dtype=torch.int64)
    for b, row in enumerate(rows):
        ids[b, T - len(row) :] = row
        mask[b, T - len(row) :] = 1
    return ids, mask


@pytest.mark.parametrize("rotary", list(ROTARIES))
@pytest.mark.parametrize("mixer", MIXERS)
def test_left_padded_generate_and_logits_equal_each_prompt_alone(mixer: str, rotary: str) -> None:
    hf_model = SelropeForCausalLM.from_language_model(tiny_model(mixer, ROTARIES[rotary])).eval()
    gen = torch.Generator().manual_seed(6)
    # Token 0 pads, so the prompts avoid it (generate infers a mask from pads in a prompt).
    rows = [torch.randint(1, VOCAB, (n,), generator=gen) for n in (3, 11, 6)]
    ids, mask = left_padded(rows)
    options = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    greedy = hf_model.generate(input_ids=ids, attention_mask=mask, **options)
    beams = hf_model.generate(input_ids=ids, attention_mask=mask, num_beams=3, **options)
    # Logits in float64: exactly the same maths (in float32 these larger weights give logits of
    # ~5 and chunk edges at other offsets a few ulps apart).
    double = SelropeForCausalLM.from_language_model(
        tiny_model(mixer, ROTARIES[rotary]).double()
    ).eval()
    with torch.no_grad():
        logits = double(ids, attention_mask=mask).logits
    T = ids.shape[1]
    for b, row in enumerate(rows):
        alone = hf_model.generate(row[None], **options)[0, len(row) :]
        assert torch.equal(greedy[b, T:], alone)
        alone = hf_model.generate(row[None], num_beams=3, **options)[0, len(row) :]
        assert torch.equal(beams[b, T:], alone)
        with torch.no_grad():
            expected = double(row[None]).logits[0]
        torch.testing.assert_close(logits[b, T - len(row) :], expected, atol=1e-10, rtol=1e-10)


def test_save_load_save_is_bit_identical(tmp_path) -> None:
    model = tiny_model("gdn", ROTARIES["carope"])
    model.save_pretrained(tmp_path / "selrope")
    saved = json.loads((tmp_path / "selrope" / "config.json").read_text())
    assert saved["model_type"] == "selrope"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "selrope")
    assert isinstance(loaded, SelropeForCausalLM) and not loaded.training
    loaded.save_pretrained(tmp_path / "hf")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "selrope" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    back = LanguageModel.from_pretrained(tmp_path / "hf")
    ids = torch.randint(0, VOCAB, (1, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), atol=0, rtol=0)


def test_config_without_model_type_loads_through_the_class(tmp_path) -> None:
    # Directories written before config.json named its model_type.
    model = tiny_model("gla", ROTARIES["nope"])
    model.save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    path.write_text(json.dumps(model.config.to_dict()))
    loaded = SelropeForCausalLM.from_pretrained(tmp_path)  # a run folder holding model/
    assert loaded.config.to_lm_config() == model.config


def test_unknown_config_field_is_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown selrope config fields \['n_layer'\]"):
        SelropeConfig(vocab_size=VOCAB, n_layer=3)
    model = tiny_model("attention", ROTARIES["nope"])
    model.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**values, "hidden_sizes": 5}))
    with pytest.raises(ValueError, match="hidden_sizes"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="mixer must be one of"):
        SelropeConfig(vocab_size=VOCAB, mixer="mamba")


def test_auto_tokenizer_on_a_prepared_byte_corpus(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "docs").mkdir()
    text = "The cat sat on the mat. Ünïcode too!\nSecond line."
    (tmp_path / "docs" / "a.txt").write_text(text)
    (tmp_path / "docs" / "b.txt").write_text("another document")
    prepare_corpus([tmp_path / "docs"], "byte", tmp_path / "data", progress=False)
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tmp_path / "data" / "tokenizer.json"))
    model = LanguageModel(
        LMConfig(vocab_size=raw.get_vocab_size(), d_model=16, n_layers=1, n_heads=2)
    )
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "tokenizer.json").write_bytes(
        (tmp_path / "data" / "tokenizer.json").read_bytes()
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    ids = tokenizer(text + EOS_TOKEN)["input_ids"]
    assert ids == raw.encode(text + EOS_TOKEN).ids
    assert tokenizer.eos_token == EOS_TOKEN and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids) == text + EOS_TOKEN
    tokenizer.save_pretrained(tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again(text)["input_ids"] == ids[:-1] and again.eos_token == EOS_TOKEN
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert loaded.generation_config.eos_token_id == tokenizer.eos_token_id


def test_pipeline_batch_of_prompts_and_streamer_equal_each_prompt_alone(
    tmp_path, monkeypatch, capsys
) -> None:
    from transformers import TextStreamer, pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("The cat sat on the mat.")
    (tmp_path / "docs" / "b.txt").write_text("another document")
    prepare_corpus([tmp_path / "docs"], "byte", tmp_path / "data", progress=False)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tmp_path / "data" / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    model = LanguageModel(
        LMConfig(
            vocab_size=vocab,
            d_model=16,
            n_layers=1,
            n_heads=2,
            mixer="gdn",
            rotary={"type": "rope"},
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "tokenizer.json").write_bytes(
        (tmp_path / "data" / "tokenizer.json").read_bytes()
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == EOS_TOKEN
    generator = pipeline("text-generation", model=str(tmp_path / "model"))
    prompts = ["The cat", "A much longer prompt than that", "x"]
    options = dict(max_new_tokens=10, do_sample=False)
    batched = generator(prompts, batch_size=3, **options)
    alone = [generator(prompt, **options) for prompt in prompts]
    assert batched == alone
    assert all(
        len(out[0]["generated_text"]) > len(p) for out, p in zip(alone, prompts, strict=True)
    )
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    batch = tokenizer(prompts[:1], return_tensors="pt")
    capsys.readouterr()
    tokens = hf_model.generate(**batch, streamer=TextStreamer(tokenizer), **options)
    assert capsys.readouterr().out.strip() == tokenizer.decode(tokens[0]).strip()
