"""selrope.models.io: the one writer and loader of model directories, run folders and checkpoint
weights; what it refuses (one-line ValueErrors naming the file); the global RNG left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from tiny_models import MIXERS, ROTARIES, named_mixer

from selrope.models import LanguageModel, LMConfig
from selrope.models.io import (
    check_same_tokenizer,
    load_pretrained,
    load_weights,
    model_directory,
    save_pretrained,
    save_weights,
    weight_shapes,
)

RELEASE = Path(__file__).parent / "release_models"


def tiny_model(mixer: str, rotary: dict, seed: int = 0, **overrides) -> LanguageModel:
    """A 2-layer, d 32 model (vocab 23) in eval mode, every parameter moved off its initial value;
    the global RNG is left alone."""
    mixer = named_mixer(mixer)
    values = {"vocab_size": 23, "d_model": 32, "n_layers": 2, "n_heads": 2, "mixer": mixer}
    config = LMConfig.from_dict({**values, "rotary": dict(rotary), **overrides})
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LanguageModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


RELEASE_MODELS = ["gla-selective-tied", "attention-rope", "fox-carope", "gdn-nope"]


@pytest.mark.parametrize("name", RELEASE_MODELS)
def test_directories_of_the_last_release_load_to_the_same_logits(name):
    # Written by commit 6864e61's save_pretrained (safetensors.save_model + a flat config.json);
    # see release_models/make_release_models.py.
    expected = load_file(str(RELEASE / "expected_logits.safetensors"))
    loaded = load_pretrained(RELEASE / name)
    assert loaded.directory == RELEASE / name and loaded.tokenizer_file is None
    assert not loaded.model.training
    with torch.no_grad():
        logits = loaded.model(expected["input_ids"])
    assert torch.equal(logits, expected[name])


def test_checkpoint_weights_of_the_last_release_load_to_the_same_logits():
    # The trainer's old writer stored tied weights once with an "aliases" map in the metadata.
    expected = load_file(str(RELEASE / "expected_logits.safetensors"))
    model = LanguageModel.from_pretrained(RELEASE / "gla-selective-tied")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    load_weights(model, RELEASE / "checkpoint-weights.safetensors")
    assert model.lm_head.weight is model.embedding.weight
    with torch.no_grad():
        assert torch.equal(model(expected["input_ids"]), expected["gla-selective-tied"])


@pytest.mark.parametrize("mixer", MIXERS)
def test_round_trip_is_bit_exact_and_leaves_the_global_rng_alone(tmp_path, mixer):
    model = tiny_model(mixer, ROTARIES["selective"], tie_embeddings=True)
    model.save_pretrained(tmp_path / "run" / "model")
    ids = torch.randint(0, 23, (2, 9), generator=torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    loaded = LanguageModel.from_pretrained(tmp_path / "run")  # a run folder holding model/
    assert torch.equal(torch.get_rng_state(), before)
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert loaded.lm_head.weight is loaded.embedding.weight
    # Saved again, the files are the same bytes.
    loaded.save_pretrained(tmp_path / "again")
    for name in ("config.json", "model.safetensors"):
        again = (tmp_path / "again" / name).read_bytes()
        assert again == (tmp_path / "run" / "model" / name).read_bytes()


def test_one_writer_stores_tied_weights_once_and_reads_safetensors_save_model_files(tmp_path):
    model = tiny_model("gla", ROTARIES["rope"], tie_embeddings=True)
    save_pretrained(model, tmp_path / "ours")
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) >= {"embedding.weight"} and "lm_head.weight" not in set(f.keys())
        assert json.loads(f.metadata()["aliases"]) == {"lm_head.weight": "embedding.weight"}
    # safetensors' own loader reads our file, and ours reads safetensors' writer's file.
    other = tiny_model("gla", ROTARIES["rope"], seed=3, tie_embeddings=True)
    load_model(other, str(tmp_path / "ours" / "model.safetensors"))
    ids = torch.randint(0, 23, (1, 7))
    with torch.no_grad():
        assert torch.equal(other(ids), model(ids))
    save_model(model, str(tmp_path / "theirs.safetensors"))
    fresh = tiny_model("gla", ROTARIES["rope"], seed=4, tie_embeddings=True)
    load_weights(fresh, tmp_path / "theirs.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


def _one_line_value_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    return message


@pytest.mark.parametrize("cut", [0, 7, 100, "half", -1])
def test_truncated_weights_are_refused_naming_the_file(tmp_path, cut):
    tiny_model("attention", ROTARIES["rope"]).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2 if cut == "half" else cut])
    message = _one_line_value_error(lambda: load_pretrained(tmp_path))
    assert message.startswith(f"{weights}: not a complete safetensors file (")
    assert message.endswith("expected the weights that save_pretrained writes")
    _one_line_value_error(lambda: weight_shapes(weights))


def test_a_model_beyond_the_machine_is_refused_before_anything_is_allocated(tmp_path):
    model = tiny_model("gla", ROTARIES["nope"])
    model.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**values, "d_model": 10**9}))
    message = _one_line_value_error(lambda: load_pretrained(tmp_path))
    assert message.startswith(f"{config_file}: the model it describes is far beyond")
    config_file.write_text(json.dumps({**values, "d_model": 100_000, "n_heads": 2}))
    message = _one_line_value_error(lambda: load_pretrained(tmp_path))
    assert (
        message.startswith(f"{config_file}: a model of ") and "more than this machine's" in message
    )
    config_file.write_text(json.dumps({**values, "d_model": "wide"}))
    message = _one_line_value_error(lambda: load_pretrained(tmp_path))
    assert message.startswith(f"{config_file}: d_model must be a positive integer")
    config_file.write_text("{not json")
    assert _one_line_value_error(lambda: load_pretrained(tmp_path)).startswith(
        f"{config_file}: not a readable JSON config"
    )


def test_weights_of_another_model_are_refused(tmp_path):
    tiny_model("gla", ROTARIES["nope"]).save_pretrained(tmp_path / "small")
    LanguageModel(LMConfig(vocab_size=23, d_model=64, n_layers=2, n_heads=2)).save_pretrained(
        tmp_path / "wide"
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_bytes((tmp_path / "wide" / "config.json").read_bytes())
    (mixed / "model.safetensors").write_bytes(
        (tmp_path / "small" / "model.safetensors").read_bytes()
    )
    message = _one_line_value_error(lambda: load_pretrained(mixed))
    assert message.startswith(f"{mixed / 'model.safetensors'}: weights of another model: ")
    assert "expects [23, 64]" in message and "has shape [23, 32]" in message
    # A tied config read against untied weights, and the reverse: a name too many or missing.
    untied = tiny_model("attention", ROTARIES["nope"])
    save_weights(untied, tmp_path / "untied.safetensors")
    tied = tiny_model("attention", ROTARIES["nope"], tie_embeddings=True)
    message = _one_line_value_error(lambda: load_weights(tied, tmp_path / "untied.safetensors"))
    assert "lm_head.weight and embedding.weight differ, but the model ties them" in message
    save_weights(tied, tmp_path / "tied.safetensors")
    message = _one_line_value_error(lambda: load_weights(untied, tmp_path / "tied.safetensors"))
    assert "no tensor 'lm_head.weight'" in message


def test_a_folder_without_a_model_is_refused(tmp_path):
    message = _one_line_value_error(lambda: model_directory(tmp_path))
    assert message.startswith(f"{tmp_path} holds no config.json + model.safetensors")


def test_tokenizer_check_compares_bytes_and_skips_a_model_without_one(tmp_path):
    model_dir, corpus = tmp_path / "model", tmp_path / "corpus"
    model_dir.mkdir()
    corpus.mkdir()
    check_same_tokenizer(model_dir, corpus)  # nothing to compare: today's behaviour
    (model_dir / "tokenizer.json").write_text('{"model": "a"}')
    check_same_tokenizer(model_dir, corpus)
    (corpus / "tokenizer.json").write_text('{"model": "a"}')
    check_same_tokenizer(model_dir, corpus)
    (corpus / "tokenizer.json").write_text('{"model": "b"}')
    message = _one_line_value_error(lambda: check_same_tokenizer(model_dir, corpus, "--data"))
    assert message.startswith(f"--data {corpus}: its tokenizer.json (sha256 ")


@pytest.mark.parametrize("name", ["gla-selective-tied", "attention-rope"])
def test_directories_of_the_last_release_load_through_auto_model(name, tmp_path):
    pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
    from transformers import AutoModelForCausalLM

    import selrope.models.hf  # noqa: F401 - registers model_type "selrope"

    expected = load_file(str(RELEASE / "expected_logits.safetensors"))
    before = torch.get_rng_state()
    model = AutoModelForCausalLM.from_pretrained(RELEASE / name)
    assert torch.equal(torch.get_rng_state(), before)
    with torch.no_grad():
        assert torch.equal(model(expected["input_ids"]).logits, expected[name])
    # A truncated copy is refused by the same loader, naming the file.
    (tmp_path / "config.json").write_bytes((RELEASE / name / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes(
        (RELEASE / name / "model.safetensors").read_bytes()[:100]
    )
    message = _one_line_value_error(lambda: AutoModelForCausalLM.from_pretrained(tmp_path))
    assert message.startswith(f"{tmp_path / 'model.safetensors'}: not a complete safetensors")
