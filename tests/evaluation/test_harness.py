"""selrope.evaluation.harness: the task documents carry lm-eval's own BLiMP / PIQA prompts,
`selrope eval --tasks` end to end on tiny local files with no network (accuracies from the
models' own log-probabilities), and lm-eval's HFLM around the transformers bridge."""

from __future__ import annotations

import ast
import json
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

from byte_models import own_logprob, save_byte_run  # noqa: E402

from selrope.cli import main  # noqa: E402
from selrope.data import EOS_TOKEN  # noqa: E402
from selrope.evaluation.harness import (  # noqa: E402
    COMPLETION_PARADIGM,
    load_tasks,
    write_task_configs,
)
from selrope.models import LanguageModel, LMConfig  # noqa: E402


def run_eval_command(argv: list[str]) -> None:
    main(["eval", *argv])


SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BLIMP_PAIRS = {
    "agreement": [
        ("The cats sleep.", "The cats sleeps."),
        ("A dog barks.", "A dog bark."),
        ("These books are red.", "These books is red."),
    ],
    "island": [
        ("Who did you see?", "Who did you see him?"),
        ("It rains.", "It rain."),
        ("What did she say that he ate?", "What did she say whether he ate?"),
    ],
}
PIQA = [
    ({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid"}, 0),
    ({"goal": "Dry hands", "sol1": "use water", "sol2": "use a towel"}, 1),
    ({"goal": "Cool tea", "sol1": "wait", "sol2": "boil it"}, 0),
]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Offline switches on, caches in tmp_path, and every socket connection recorded + refused."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory) -> Path:
    """A tiny GLA model saved like a training run, the byte tokenizer beside the weights."""
    return save_byte_run(tmp_path_factory.mktemp("run"), "gla")


@pytest.fixture(scope="module")
def second_run(tmp_path_factory) -> Path:
    return save_byte_run(tmp_path_factory.mktemp("run2"), "attention", {"type": "rope"}, seed=1)


def test_hflm_around_the_transformers_bridge_scores_like_the_model(byte_run, offline) -> None:
    # lm-eval's own `--model hf` path: HFLM around SelropeForCausalLM and SelropeTokenizer.
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from selrope.models.hf import SelropeForCausalLM, SelropeTokenizer

    lm = HFLM(
        pretrained=SelropeForCausalLM.from_pretrained(byte_run / "model"),
        backend="causal",
        tokenizer=SelropeTokenizer.from_pretrained(byte_run / "model"),
        batch_size=2,
    )
    model = LanguageModel.from_pretrained(byte_run / "model").eval()
    pairs = [("Question: why?\nAnswer:", " because"), ("", "The cats sleep."), ("ab", "c")]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]
    results = lm.loglikelihood(requests)
    for (context, continuation), (logprob, _) in zip(pairs, results, strict=True):
        assert logprob == pytest.approx(own_logprob(model, context, continuation), abs=1e-4)
    assert lm.eot_token_id == 256 and lm.tokenizer.eos_token == EOS_TOKEN
    assert offline == []


def _write_local_data(root: Path) -> tuple[Path, Path]:
    blimp, piqa = root / "blimp", root / "piqa"
    blimp.mkdir()
    piqa.mkdir()
    for uid, pairs in BLIMP_PAIRS.items():
        lines = [
            json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": uid, "pairID": str(i)})
            for i, (good, bad) in enumerate(pairs)
        ]
        (blimp / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")
    (piqa / "valid.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc, _ in PIQA))
    (piqa / "valid-labels.lst").write_text("".join(f"{label}\n" for _, label in PIQA))
    return blimp, piqa


def _blimp_right(model: LanguageModel, good: str, bad: str) -> bool:
    # lm-eval's continuation is target_delimiter + choice, read after EOS (empty context).
    return own_logprob(model, "", " " + good) > own_logprob(model, "", " " + bad)


def _piqa_choice(model: LanguageModel, doc: dict, normalise: bool) -> int:
    def score(k: int) -> float:
        solution = doc[f"sol{k + 1}"]
        logprob = own_logprob(model, f"Question: {doc['goal']}\nAnswer:", " " + solution)
        return logprob / len(solution) if normalise else logprob  # acc_norm: per character

    return max((0, 1), key=score)


def test_selrope_eval_tasks_offline_end_to_end(
    byte_run, second_run, tmp_path, offline, capsys
) -> None:
    blimp, piqa = _write_local_data(tmp_path)
    out = tmp_path / "out"
    run_eval_command(
        ["--checkpoint", f"{byte_run},{second_run}", "--tasks", "blimp,piqa"]
        + ["--blimp-dir", str(blimp), "--piqa-dir", str(piqa), "--out", str(out)]
        + ["--device", "cpu", "--name", "gla,attention", "--batch-size", "3"]
    )
    assert offline == []
    everything = json.loads((out / "harness.json").read_text())
    # Both models were scored on the same task objects (built once); each matches its own
    # log-probabilities.
    for name, run in (("gla", byte_run), ("attention", second_run)):
        model = LanguageModel.from_pretrained(run / "model").eval()
        results = everything[name]["results"]
        paradigm_accs = {
            uid: sum(_blimp_right(model, g, b) for g, b in pairs) / len(pairs)
            for uid, pairs in BLIMP_PAIRS.items()
        }
        for uid, acc in paradigm_accs.items():
            assert results[f"selrope_blimp_{uid}"]["acc,none"] == pytest.approx(acc)
        # The group: the unweighted mean of the paradigms.
        assert results["selrope_blimp"]["acc,none"] == pytest.approx(
            sum(paradigm_accs.values()) / len(paradigm_accs)
        )
        for metric, normalise in (("acc", False), ("acc_norm", True)):
            right = [_piqa_choice(model, doc, normalise) == label for doc, label in PIQA]
            assert results["selrope_piqa"][f"{metric},none"] == pytest.approx(
                sum(right) / len(PIQA)
            )
            assert results["selrope_piqa"][f"{metric}_stderr,none"] > 0
        assert everything[name]["seconds"] > 0
    table = (out / "harness.md").read_text()
    assert table.startswith("| model | BLiMP acc") and "| attention | " in table
    assert " ± " in table.splitlines()[2]
    assert "gla  selrope_piqa  acc=" in capsys.readouterr().out


def test_limit_takes_the_first_documents_of_every_paradigm(byte_run, tmp_path, offline) -> None:
    blimp, piqa = _write_local_data(tmp_path)
    out = tmp_path / "out"
    run_eval_command(
        ["--checkpoint", str(byte_run), "--tasks", "blimp", "--blimp-dir", str(blimp)]
        + ["--out", str(out), "--name", "tiny", "--limit", "2"]
    )
    model = LanguageModel.from_pretrained(byte_run / "model").eval()
    results = json.loads((out / "harness.json").read_text())["tiny"]
    for uid, pairs in BLIMP_PAIRS.items():
        assert results["n-samples"][f"selrope_blimp_{uid}"]["effective"] == 2
        assert results["results"][f"selrope_blimp_{uid}"]["acc,none"] == pytest.approx(
            sum(_blimp_right(model, g, b) for g, b in pairs[:2]) / 2
        )


def test_documents_carry_lm_evals_own_prompts(tmp_path, offline) -> None:
    # The prompts are filled in when the documents are written; they must be the strings that
    # lm-eval's own blimp and piqa tasks make with their Jinja templates.
    import lm_eval
    import yaml
    from lm_eval.utils import apply_template

    blimp, piqa = _write_local_data(tmp_path)
    names = write_task_configs(tmp_path / "tasks", ["blimp", "piqa"], blimp, piqa)
    tasks = load_tasks(names, tmp_path / "tasks")
    lm_eval_tasks = Path(lm_eval.__file__).parent / "tasks"
    blimp_template = yaml.safe_load((lm_eval_tasks / "blimp" / "_template_yaml").read_text())
    piqa_template = yaml.safe_load((lm_eval_tasks / "piqa" / "piqa.yaml").read_text())
    blimp_group, piqa_task = tasks
    paradigms = {task.config.task: task for task in blimp_group.get_all_tasks()}
    assert sorted(paradigms) == [f"selrope_blimp_{uid}" for uid in sorted(BLIMP_PAIRS)]
    checked = 0
    for task, template in [*((t, blimp_template) for t in paradigms.values())] + [
        (piqa_task, piqa_template)
    ]:
        for doc in task.validation_docs():
            raw = {key: value for key, value in doc.items() if key not in ("query", "choices")}
            assert task.doc_to_text(doc) == apply_template(template["doc_to_text"], raw)
            choices = ast.literal_eval(apply_template(template["doc_to_choice"], raw))
            assert task.doc_to_choice(doc) == choices
            target = template["doc_to_target"]
            assert task.doc_to_target(doc) == (target if isinstance(target, int) else raw[target])
            checked += 1
    assert checked == sum(len(pairs) for pairs in BLIMP_PAIRS.values()) + len(PIQA)


def _run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_eval_command(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selrope: error: "), err
    return err


def test_user_errors_are_one_line(byte_run, tmp_path, capsys) -> None:
    blimp, piqa = _write_local_data(tmp_path)
    bare = tmp_path / "bare"
    LanguageModel(LMConfig(vocab_size=257, d_model=8, n_layers=1, n_heads=2)).save_pretrained(bare)
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["--checkpoint", str(byte_run), "--tasks", "blimp", *out], "needs --blimp-dir"),
        (["--checkpoint", str(byte_run), "--tasks", "hellaswag", *out], "--tasks must be among"),
        (
            ["--checkpoint", str(bare), "--tasks", "piqa", "--piqa-dir", str(piqa), *out],
            "no tokenizer.json",
        ),
        (
            ["--checkpoint", str(byte_run), "--tasks", "piqa", "--piqa-dir", str(blimp), *out],
            "lacks",
        ),
        (["--checkpoint", str(byte_run), *out], "--tasks"),
    ]
    for argv, message in cases:
        assert message in _run_error(argv, capsys)


@pytest.mark.skipif(
    not (SHARED_DATA / "blimp").is_dir() or not (SHARED_DATA / "piqa").is_dir(),
    reason=f"the real BLiMP / PIQA files are not in {SHARED_DATA}",
)
def test_task_configs_for_the_real_blimp_and_piqa(tmp_path) -> None:
    names = write_task_configs(
        tmp_path, ["blimp", "piqa"], SHARED_DATA / "blimp", SHARED_DATA / "piqa"
    )
    assert names == ["selrope_blimp", "selrope_piqa"]
    group = json.loads((tmp_path / "selrope_blimp.yaml").read_text())
    assert len(group["task"]) == 67 and group["aggregate_metric_list"][0]["weight_by_size"] is False
    merged = (tmp_path / "piqa_validation.jsonl").read_text().splitlines()
    labels = (SHARED_DATA / "piqa" / "valid-labels.lst").read_text().split()
    assert len(merged) == len(labels) == 1838
    assert [json.loads(line)["label"] for line in merged] == [int(label) for label in labels]
    paradigms = sorted((tmp_path / "blimp").glob("*.jsonl"))
    assert [path.name for path in paradigms] == [
        path.name for path in sorted((SHARED_DATA / "blimp").glob("*.jsonl"))
    ]
    first = json.loads(paradigms[0].read_text().splitlines()[0])
    assert first["choices"] == [first["sentence_good"], first["sentence_bad"]]
    assert sum(len(path.read_text().splitlines()) for path in paradigms) == 67_000


def test_hflm_batches_give_the_numbers_of_batch_size_1(byte_run, offline) -> None:
    # `--model hf --batch_size 8`: right-padded scoring, left-padded generation (HFLM pads
    # generation prompts on the left and passes the attention mask to generate).
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from selrope.models.hf import SelropeForCausalLM, SelropeTokenizer

    def hflm(batch_size: int) -> HFLM:
        return HFLM(
            pretrained=SelropeForCausalLM.from_pretrained(byte_run / "model"),
            backend="causal",
            tokenizer=SelropeTokenizer.from_pretrained(byte_run / "model"),
            batch_size=batch_size,
        )

    pairs = [
        ("Question: why?\nAnswer:", " because"),
        ("", "The cats sleep."),
        ("ab", "c"),
        ("a much longer context that runs on for a while before", " the end"),
    ]
    scoring = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]
    generation = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(context, {"until": ["\n"], "max_gen_toks": 10, "do_sample": False}),
            idx=i,
        )
        for i, (context, _) in enumerate(pairs)
        if context
    ]
    one, eight = hflm(1), hflm(8)
    expected = one.loglikelihood(scoring)
    results = eight.loglikelihood(scoring)
    assert [greedy for _, greedy in results] == [greedy for _, greedy in expected]
    assert [lp for lp, _ in results] == pytest.approx([lp for lp, _ in expected], abs=1e-5)
    texts = eight.generate_until(generation)
    assert texts == one.generate_until(generation)
    assert any(texts)
    assert offline == []


@pytest.mark.parametrize("adapter", ["selrope", "hf"])
def test_local_blimp_and_piqa_give_the_same_numbers_at_batch_size_8_and_1(
    byte_run, tmp_path, offline, adapter
) -> None:
    from lm_eval.models.huggingface import HFLM

    from selrope.evaluation.harness import evaluate_tasks, harness_model
    from selrope.models.hf import SelropeForCausalLM, SelropeTokenizer

    blimp, piqa = _write_local_data(tmp_path)
    # The generation task reads its sentences from this paradigm (the harness' COMPLETION_...).
    shutil.copy(blimp / "agreement.jsonl", blimp / COMPLETION_PARADIGM)
    tasks_asked = ["blimp", "piqa", "completion"]
    names = write_task_configs(tmp_path / "tasks", tasks_asked, blimp, piqa)
    tasks = load_tasks(names, tmp_path / "tasks")

    def lm(batch_size: int):
        if adapter == "selrope":
            return harness_model(byte_run / "model", batch_size=batch_size)
        return HFLM(
            pretrained=SelropeForCausalLM.from_pretrained(byte_run / "model"),
            backend="causal",
            tokenizer=SelropeTokenizer.from_pretrained(byte_run / "model"),
            batch_size=batch_size,
        )

    one = evaluate_tasks(lm(1), tasks)["results"]
    eight = evaluate_tasks(lm(8), tasks)["results"]
    assert set(one) == set(eight) and {"selrope_piqa", "selrope_completion"} <= set(one)
    assert one["selrope_completion"]["chrf,none"] > 0  # generations were made and scored
    for task, row in one.items():
        for metric, value in row.items():
            if isinstance(value, float):
                assert eight[task][metric] == pytest.approx(value, abs=1e-9), (task, metric)
    assert offline == []
