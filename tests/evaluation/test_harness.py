"""selrope.evaluation.harness: lm-eval's loglikelihood == the model's own log-probabilities, and
`selrope eval --tasks` end to end on tiny local BLiMP / PIQA files with no network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

from selrope.data import EOS_TOKEN, prepare_corpus  # noqa: E402
from selrope.evaluation.command import run_eval_command  # noqa: E402
from selrope.evaluation.harness import harness_model, write_task_configs  # noqa: E402
from selrope.models import LanguageModel, LMConfig  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BLIMP_PAIRS = {
    "agreement": [("The cats sleep.", "The cats sleeps."), ("A dog barks.", "A dog bark.")],
    "island": [("Who did you see?", "Who did you see him?"), ("It rains.", "It rain.")],
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
    """A tiny GLA + Selective-RoPE-free model saved like a training run: model/ with the byte
    corpus tokenizer beside the weights."""
    root = tmp_path_factory.mktemp("run")
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("a small corpus for the tokenizer")
    (root / "docs" / "b.txt").write_text("and a second document")
    prepare_corpus([root / "docs"], "byte", root / "data", progress=False)
    tokenizer_json = (root / "data" / "tokenizer.json").read_bytes()
    config = LMConfig(vocab_size=257, d_model=16, n_layers=1, n_heads=2, mixer="gla", chunk_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LanguageModel(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(root / "run" / "model")
    (root / "run" / "model" / "tokenizer.json").write_bytes(tokenizer_json)
    return root / "run"


def own_logprob(model: LanguageModel, context: str, continuation: str) -> float:
    """Summed log-probability of the continuation's bytes after the context's bytes (an empty
    context reads the continuation after EOS, id 256)."""
    context_ids = list(context.encode()) or [256]
    ids = torch.tensor([context_ids + list(continuation.encode())])
    with torch.no_grad():
        logprobs = model(ids[:, :-1]).double().log_softmax(-1)[0]
    targets = ids[0, len(context_ids) :]
    return float(logprobs[len(context_ids) - 1 :].gather(-1, targets[:, None]).sum())


def test_loglikelihood_is_the_models_own_log_probability(byte_run, offline) -> None:
    from lm_eval.api.instance import Instance

    lm = harness_model(byte_run / "model", "cpu", batch_size=2)
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


def test_selrope_eval_tasks_offline_end_to_end(byte_run, tmp_path, offline, capsys) -> None:
    blimp, piqa = _write_local_data(tmp_path)
    out = tmp_path / "out"
    run_eval_command(
        ["--checkpoint", str(byte_run), "--tasks", "blimp,piqa", "--blimp-dir", str(blimp)]
        + ["--piqa-dir", str(piqa), "--out", str(out), "--device", "cpu", "--name", "tiny"]
    )
    assert offline == []
    model = LanguageModel.from_pretrained(byte_run / "model").eval()
    # BLiMP: right when the good sentence is likelier (empty context); the group is the mean of
    # the paradigms' accuracies.
    paradigm_accs = [
        sum(own_logprob(model, "", g) > own_logprob(model, "", b) for g, b in pairs) / len(pairs)
        for pairs in BLIMP_PAIRS.values()
    ]
    piqa_right = [
        max(
            (0, 1),
            key=lambda k: own_logprob(
                model, f"Question: {doc['goal']}\nAnswer:", " " + doc[f"sol{k + 1}"]
            ),
        )
        == label
        for doc, label in PIQA
    ]
    results = json.loads((out / "harness.json").read_text())["tiny"]["results"]
    assert results["selrope_blimp"]["acc,none"] == pytest.approx(sum(paradigm_accs) / 2)
    assert results["selrope_piqa"]["acc,none"] == pytest.approx(sum(piqa_right) / len(PIQA))
    table = (out / "harness.md").read_text()
    assert table.startswith("| model | BLiMP acc") and "| tiny | " in table
    assert "tiny  selrope_piqa  acc=" in capsys.readouterr().out


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
