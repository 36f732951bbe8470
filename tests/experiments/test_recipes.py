"""The papers' recipes (configs/): the reference parameter counts, and each CPU twin trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from selrope.cli import main
from selrope.cli.train import parse_options
from selrope.experiments import grid_runs, rotary_preset, sort_options
from selrope.experiments.config import model_and_train_configs
from selrope.models import LMConfig, parameter_count
from selrope.tasks import task_spec

CONFIGS = Path(__file__).parents[2] / "configs"
RECIPES = CONFIGS / "selective_rope"
GPT2_RECIPES = sorted((CONFIGS / "carope").glob("gpt2_*.yaml"))
LM_RECIPES = sorted(RECIPES.glob("lm_*.yaml")) + GPT2_RECIPES
VOCAB = 32000  # Mistral-7B's tokenizer, the paper's
GPT2_VOCAB = 50257


def recipe_model(path: Path, vocab_size: int = VOCAB) -> LMConfig:
    recipe = yaml.safe_load(path.read_text())
    model = dict(recipe["model"])
    position = recipe["position"]
    overrides = {position: model.pop("rotary")} if "rotary" in model else None
    rotary = rotary_preset(position, task_spec("lm").selective_recipe, overrides)
    absolute = position if position in ("learned", "sinusoidal") else "none"
    values = {**model, "vocab_size": vocab_size, "rotary": rotary, "absolute_position": absolute}
    return LMConfig.from_dict(values)


def reference_count(mixer: str) -> int:
    """The parameters of the reference implementation of the recipe's NoPE model."""
    with torch.device("meta"):
        if mixer == "transformer":
            transformers = pytest.importorskip("transformers")
            config = transformers.LlamaConfig(
                vocab_size=VOCAB, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                num_key_value_heads=16, intermediate_size=2816, tie_word_embeddings=False,
            )  # fmt: skip
            model = transformers.LlamaForCausalLM(config)
        else:
            fla = pytest.importorskip("fla.models", reason="fla's models: flash-linear-attention")
            common = {"vocab_size": VOCAB, "hidden_size": 1024, "num_hidden_layers": 24,
                      "tie_word_embeddings": False, "use_short_conv": True}  # fmt: skip
            if mixer == "gla":
                config = fla.GLAConfig(num_heads=4, expand_k=0.5, expand_v=1.0, **common)
                model = fla.GLAForCausalLM(config)
            else:
                config = fla.GatedDeltaNetConfig(num_heads=8, head_dim=128, expand_v=1.0, **common)
                model = fla.GatedDeltaNetForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("mixer", ["gla", "gdn", "transformer"])
def test_nope_recipes_have_the_reference_parameter_counts(mixer):
    ours = parameter_count(recipe_model(RECIPES / f"lm_{mixer}_nope.yaml"))
    assert ours == reference_count(mixer)
    assert ours == parameter_count(recipe_model(RECIPES / f"lm_{mixer}_rope.yaml"))
    # Selective RoPE adds its projection, conv and gate: about 70K a layer (notes C.5).
    added = parameter_count(recipe_model(RECIPES / f"lm_{mixer}_selective.yaml")) - ours
    assert 0 < added / 24 < 100_000


def gpt2_count(size: str) -> int:
    """The parameters of transformers' GPT2LMHeadModel of that size (1,024 learned positions)."""
    transformers = pytest.importorskip("transformers")
    shape = {} if size == "small" else {"n_embd": 1024, "n_layer": 24, "n_head": 16}
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**shape))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("recipe", GPT2_RECIPES, ids=lambda path: path.stem)
def test_gpt2_recipes_have_gpt2s_parameter_count_less_its_position_table(recipe):
    size, position, length = recipe.stem.split("_")[1:]
    config = recipe_model(recipe, GPT2_VOCAB)
    d, T = config.d_model, int(length.removeprefix("T"))
    assert config.max_positions == T and config.rotary.get("base", 10000.0) == 10000.0
    without_table = gpt2_count(size) - 1024 * d
    L, H = config.n_layers, config.n_heads
    # learned: T rows of d; CARoPE: its per-head frequency map (d x H and a bias) in every layer.
    added = {"rope": 0, "learned": T * d, "carope": L * (d * H + H)}[position]
    assert parameter_count(config) == without_table + added


def test_the_two_thirds_rule_is_fla_and_llama_width():
    assert recipe_model(RECIPES / "lm_gla_nope.yaml").mlp_hidden_size == 2816


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    (root / "text").mkdir()
    for i in range(8):
        words = " ".join(f"word{(i * 7 + j * j) % 31}" for j in range(300))
        (root / "text" / f"doc{i}.txt").write_text(words)
    main(["data", "prepare", "--input", str(root / "text"), "--tokenizer", "byte", "--out",
          str(root / "corpus"), "--quiet"])  # fmt: skip
    return root / "corpus"


@pytest.mark.parametrize("recipe", LM_RECIPES, ids=lambda path: path.stem)
def test_each_recipes_cpu_twin_trains(recipe, corpus, tmp_path):
    out = tmp_path / "run"
    twin = recipe.parent / "cpu_twin.yaml"
    main(["train", "--config", str(recipe), "--config", str(twin),
          "--data", str(corpus), "--out", str(out)])  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    wanted = yaml.safe_load(recipe.read_text())
    assert record["model"]["mixer"]["kind"] == wanted["model"]["mixer"]["kind"]
    assert record["position"] == wanted["position"] and record["train"]["betas"] == [0.9, 0.95]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses) == 8 and losses[-1] < losses[0]


SWEEPS = sorted(CONFIGS.glob("*/sweep_*.yaml"))
SWEEP_TWIN = CONFIGS / "sweep_cpu_twin.yaml"


def sweep_runs(sweep: Path) -> list[dict]:
    """The grid's runs of ``selrope compare --config SWEEP``, as sections."""
    values = parse_options("compare", ["--config", str(sweep)])
    sections = sort_options(values, "compare")
    grid = sections.pop("grid")
    return grid_runs(sections, grid["mixers"], grid["rotaries"], grid["seeds"], "runs/sweep")


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_every_cell_of_each_sweep_is_a_valid_full_size_run(sweep):
    grid = yaml.safe_load(sweep.read_text())["grid"]
    runs = sweep_runs(sweep)
    assert len(runs) == len(grid["mixers"]) * len(grid["rotaries"]) * len(grid["seeds"])
    task = yaml.safe_load(sweep.read_text())["task"]
    vocab = task_spec(task["name"]).build(0, **{**task_params(task), "num_train": 1,
                                                 "num_test": 1}).vocab_size  # fmt: skip
    for run in runs:
        model, train = model_and_train_configs(run, vocab)
        assert model.mixer.kind == run["run"]["mixer"]
        assert model.d_model == run["model"]["d_model"]
        assert train.steps == yaml.safe_load(sweep.read_text())["train"]["steps"]


def task_params(task: dict) -> dict:
    return {key: value for key, value in task.items() if key != "name"}


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_each_sweeps_cpu_twin_trains_its_first_cell(sweep, tmp_path):
    out = tmp_path / "run"
    main(["train", "--config", str(sweep), "--config", str(SWEEP_TWIN), "--out", str(out)])
    record = json.loads((out / "run.json").read_text())
    wanted = yaml.safe_load(sweep.read_text())
    assert record["model"]["mixer"]["kind"] == wanted["grid"]["mixers"][0]
    assert record["position"] == wanted["grid"]["rotaries"][0]
    assert record["task"]["name"] == wanted["task"]["name"]
    lengths = {key: value for key, value in task_params(wanted["task"]).items()
               if key not in ("num_train", "num_test")}  # fmt: skip
    assert {key: record["task"][key] for key in lengths} == lengths
    for key in {"betas", "weight_decay", "min_lr_ratio", "lr_decay"} & set(wanted["train"]):
        given = wanted["train"][key]
        assert record["train"][key] == (list(given) if isinstance(given, list) else given)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses) == 16 and losses[-1] < losses[0]
