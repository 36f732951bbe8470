"""selrope.models.hf: transformers generate == selrope generate, logits, save/load, tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from tiny_models import MIXERS, ROTARIES  # noqa: E402
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
            mixer=mixer,
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


def test_labels_give_the_shifted_loss_and_padding_is_refused() -> None:
    model = tiny_model("attention", ROTARIES["rope"])
    hf_model = SelropeForCausalLM.from_language_model(model)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    out = hf_model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected)
    right_padded = torch.ones_like(ids)
    right_padded[0, -3:] = 0
    hf_model(ids, attention_mask=right_padded)  # causal: the real tokens never see the pads
    with pytest.raises(ValueError, match="no padding mask"):
        hf_model(ids, attention_mask=right_padded.flip(1))
    with pytest.raises(ValueError, match="no padding mask"):
        hf_model(ids, attention_mask=right_padded, use_cache=True)


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
