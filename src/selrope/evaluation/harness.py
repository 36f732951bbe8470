"""BLiMP and PIQA through lm-evaluation-harness (extra ``eval``), fully offline.

The task configs and their data are written at run time from the local files (absolute paths,
``dataset_path: json``), with the prompts of lm-eval's own ``blimp`` and ``piqa`` tasks:

- ``selrope_blimp``: a group of the 67 paradigms ``selrope_blimp_<UID>`` (one JSONL each, from
  the BLiMP release); a sentence pair is right when the grammatical sentence gets the higher
  log-probability (empty context: the model reads it after ``<|endoftext|>``, a document start).
  acc is the unweighted mean over paradigms, as in lm-eval's ``blimp``; chance 0.5.
- ``selrope_piqa``: PIQA validation (``valid.jsonl`` with ``valid-labels.lst``),
  "Question: {goal}\nAnswer:" + either solution; acc and acc_norm, chance 0.5.

Every document is written with its prompt already filled in (``query``, ``choices``, ``label``:
the strings lm-eval's Jinja templates ``doc_to_text`` / ``doc_to_choice`` make, which the task
configs then name as fields). lm-eval compiles a template afresh at every use, four uses per
document, about 2 ms per BLiMP pair: as long as scoring the pair with these models.

The model is :class:`selrope.evaluation.lm_eval_model.SelropeLM` (lm-eval model ``selrope``).
Running this module runs lm-eval's own command line with selrope's models registered first
(``--model selrope``, or ``--model hf`` for the transformers bridge):

    python -m selrope.evaluation.harness tasks --blimp-dir D --piqa-dir D --out TASKS
    python -m selrope.evaluation.harness run --model selrope --model_args pretrained=RUN \\
        --tasks selrope_blimp,selrope_piqa --include_path TASKS --batch_size 64
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TASKS = ("blimp", "piqa", "completion")
TASK_NAMES = {"blimp": "selrope_blimp", "piqa": "selrope_piqa", "completion": "selrope_completion"}
# The generation task of our own: finish a BLiMP sentence (its grammatical half), greedy, up to
# the full stop; exact match against the sentence's second half.
COMPLETION_PARADIGM = "determiner_noun_agreement_1.jsonl"
COMPLETION_MAX_TOKENS = 24
BLIMP_PARADIGMS = 67
PIQA_FILES = ("valid.jsonl", "valid-labels.lst")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _yaml_text(config: dict[str, Any]) -> str:
    """A task config as YAML (JSON is YAML; PyyAML reads it)."""
    return json.dumps(config, indent=2) + "\n"


def blimp_files(blimp_dir: str | Path) -> list[Path]:
    """The paradigm files ``<UID>.jsonl`` of a BLiMP folder, sorted.

    Raises:
        ValueError: the folder is missing or holds no ``*.jsonl``.
    """
    folder = Path(blimp_dir)
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"--blimp-dir {str(blimp_dir)!r} holds no BLiMP paradigm files *.jsonl")
    return files


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))


def blimp_docs(paradigm_file: Path) -> list[dict[str, Any]]:
    """A BLiMP paradigm's pairs with lm-eval's ``blimp`` prompt filled in: ``query`` "" (the
    sentence is read from a document start), ``choices`` [good, bad], ``label`` 0."""
    docs = [json.loads(line) for line in paradigm_file.read_text().splitlines() if line]
    return [
        {**doc, "query": "", "choices": [doc["sentence_good"], doc["sentence_bad"]], "label": 0}
        for doc in docs
    ]


def completion_docs(blimp_dir: str | Path) -> list[dict[str, Any]]:
    """``{"prompt", "target"}`` per grammatical sentence of ``COMPLETION_PARADIGM``: the first
    half of its words, and the rest (with its leading space) up to the full stop."""
    path = Path(blimp_dir) / COMPLETION_PARADIGM
    if not path.is_file():
        raise ValueError(f"--blimp-dir {blimp_dir}: no {COMPLETION_PARADIGM} (--tasks completion)")
    docs = []
    for line in path.read_text().splitlines():
        words = json.loads(line)["sentence_good"].rstrip(".").split(" ") if line else []
        if len(words) >= 2:
            half = len(words) // 2
            docs.append({"prompt": " ".join(words[:half]), "target": " " + " ".join(words[half:])})
    return docs


def _completion_config(name: str, data_file: Path) -> dict[str, Any]:
    """An lm-eval generation task: greedy until a full stop or a newline, exact match."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(data_file.resolve())}},
        "output_type": "generate_until",
        "validation_split": "validation",
        "doc_to_text": "prompt",
        "doc_to_target": "target",
        "generation_kwargs": {
            "until": [".", "\n"],
            "max_gen_toks": COMPLETION_MAX_TOKENS,
            "do_sample": False,
        },
        "num_fewshot": 0,
        # chrF (sacrebleu, corpus-level) moves with any character of any generation: the
        # number that shows two batch sizes generating the same text.
        "metric_list": [
            {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True},
            {"metric": "chrf", "aggregation": "chrf", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def piqa_docs(piqa_dir: str | Path) -> list[dict[str, Any]]:
    """PIQA validation with its labels (``label``: 0 or 1) and lm-eval's ``piqa`` prompt filled
    in: ``query`` "Question: {goal}\\nAnswer:", ``choices`` [sol1, sol2].

    Raises:
        ValueError: a file is missing or the two files disagree in length.
    """
    folder = Path(piqa_dir)
    missing = [name for name in PIQA_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"--piqa-dir {str(piqa_dir)!r} lacks {missing} (PIQA validation)")
    docs = [json.loads(line) for line in (folder / PIQA_FILES[0]).read_text().splitlines() if line]
    labels = [line.strip() for line in (folder / PIQA_FILES[1]).read_text().splitlines()]
    labels = [label for label in labels if label]
    if len(docs) != len(labels) or not set(labels) <= {"0", "1"}:
        raise ValueError(
            f"--piqa-dir: {len(docs)} questions but {len(labels)} labels (0/1 each) in "
            f"{PIQA_FILES[1]}"
        )
    return [
        {
            **doc,
            "label": int(label),
            "query": f"Question: {doc['goal']}\nAnswer:",
            "choices": [doc["sol1"], doc["sol2"]],
        }
        for doc, label in zip(docs, labels, strict=True)
    ]


def _multiple_choice_config(name: str, data_file: Path) -> dict[str, Any]:
    """An lm-eval multiple-choice task reading ``query`` / ``choices`` / ``label`` fields."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(data_file.resolve())}},
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_task_configs(
    tasks_dir: str | Path,
    tasks: list[str],
    blimp_dir: str | Path | None = None,
    piqa_dir: str | Path | None = None,
) -> list[str]:
    """Write lm-eval task configs and their documents (JSONL, prompts filled in) for ``tasks``
    into ``tasks_dir``.

    Args:
        tasks_dir: where the YAML files go (``--include_path`` of lm-eval); the documents go to
            ``blimp/<UID>.jsonl`` and ``piqa_validation.jsonl`` beside them.
        tasks: a subset of ``("blimp", "piqa")``.
        blimp_dir: the folder of the 67 BLiMP ``<UID>.jsonl`` files (for "blimp").
        piqa_dir: the folder holding ``valid.jsonl`` and ``valid-labels.lst`` (for "piqa").

    Returns:
        The lm-eval task names to run, e.g. ``["selrope_blimp", "selrope_piqa"]``.

    Raises:
        ValueError: an unknown task, or a data folder missing or malformed.
    """
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"--tasks must be among {list(TASKS)}; got {unknown}")
    tasks_dir = Path(tasks_dir)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    names = []
    if "blimp" in tasks:
        if blimp_dir is None:
            raise ValueError("--tasks blimp needs --blimp-dir")
        subtasks = []
        for path in blimp_files(blimp_dir):
            name = f"selrope_blimp_{path.stem}"
            data_file = tasks_dir / "blimp" / path.name
            _write_jsonl(data_file, blimp_docs(path))
            (tasks_dir / f"{name}.yaml").write_text(
                _yaml_text(_multiple_choice_config(name, data_file))
            )
            subtasks.append(name)
        group = {
            "group": TASK_NAMES["blimp"],
            "task": subtasks,
            "aggregate_metric_list": [
                {"metric": "acc", "aggregation": "mean", "weight_by_size": False}
            ],
            "metadata": {"version": 1.0},
        }
        (tasks_dir / f"{TASK_NAMES['blimp']}.yaml").write_text(_yaml_text(group))
        names.append(TASK_NAMES["blimp"])
    if "piqa" in tasks:
        if piqa_dir is None:
            raise ValueError("--tasks piqa needs --piqa-dir")
        data_file = tasks_dir / "piqa_validation.jsonl"
        _write_jsonl(data_file, piqa_docs(piqa_dir))
        config = _multiple_choice_config(TASK_NAMES["piqa"], data_file)
        config["metric_list"].append(
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}
        )
        (tasks_dir / f"{TASK_NAMES['piqa']}.yaml").write_text(_yaml_text(config))
        names.append(TASK_NAMES["piqa"])
    if "completion" in tasks:
        if blimp_dir is None:
            raise ValueError("--tasks completion needs --blimp-dir (its sentences)")
        data_file = tasks_dir / "completion_validation.jsonl"
        _write_jsonl(data_file, completion_docs(blimp_dir))
        config = _completion_config(TASK_NAMES["completion"], data_file)
        (tasks_dir / f"{TASK_NAMES['completion']}.yaml").write_text(_yaml_text(config))
        names.append(TASK_NAMES["completion"])
    return names


def harness_model(
    model_dir: str | Path, device: str = "cpu", batch_size: int = 64
) -> Any:  # selrope.evaluation.lm_eval_model.SelropeLM
    """lm-eval's model interface around a selrope model directory and its ``tokenizer.json``
    (a :class:`~selrope.evaluation.lm_eval_model.SelropeLM`).

    Raises:
        ValueError: the directory has no tokenizer.json (the harness scores text).
    """
    from selrope.evaluation.lm_eval_model import SelropeLM

    return SelropeLM(model_dir, batch_size=batch_size, device=device)


def load_tasks(task_names: list[str], tasks_dir: str | Path) -> list[Any]:
    """lm-eval's task and group objects (``lm_eval.api.task.Task`` / ``api.group.Group``) for
    ``task_names`` from the configs in ``tasks_dir`` and no others (lm-eval's own task index
    takes ~13 s to build). Build them once and evaluate every model on them: building the 67
    BLiMP tasks takes ~8 s, as each one reads and lists all of its documents.
    """
    from lm_eval.tasks import TaskManager

    os.environ.update(OFFLINE_ENV)
    loaded = TaskManager(include_path=str(tasks_dir), include_defaults=False).load(task_names)
    return [loaded["groups"].get(name) or loaded["tasks"][name] for name in task_names]


def evaluate_tasks(lm: Any, tasks: list[Any], limit: int | None = None) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` of ``lm`` on ``tasks`` (from :func:`load_tasks`) with the
    offline switches set.

    Args:
        lm: an lm-eval model, e.g. from :func:`harness_model`.
        tasks: the task and group objects to run.
        limit: the first ``limit`` documents of each task (each BLiMP paradigm), or all.

    Returns:
        lm-eval's results dict (``results``, ``groups``, ``configs``, ``n-samples``, ...),
        without per-sample logs. Standard errors of acc and acc_norm are the closed-form ones of
        a mean (``bootstrap_iters`` only switches them on; nothing here is bootstrapped).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    os.environ.update(OFFLINE_ENV)
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        # Nothing to look up (the tasks are built), but simple_evaluate would otherwise index
        # every task lm-eval ships.
        task_manager=TaskManager(include_defaults=False),
        limit=limit,
        log_samples=False,
        bootstrap_iters=1000,
    )


METRICS = (
    "acc",
    "acc_stderr",
    "acc_norm",
    "acc_norm_stderr",
    "exact_match",
    "exact_match_stderr",
    "chrf",
)


def summary_rows(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {"acc": ..., "acc_stderr": ..., "acc_norm": ..., "acc_norm_stderr": ...,
    "n": ...}}`` for the groups and plain tasks that were asked for (not the 67 BLiMP
    paradigms); a metric or standard error lm-eval did not give is left out."""
    rows = {}
    for task in TASK_NAMES.values():
        values = results.get("results", {}).get(task)
        if values is None:
            continue
        row = {}
        for metric in METRICS:
            value = values.get(f"{metric},none")
            if isinstance(value, (int, float)):
                row[metric] = float(value)
        row["n"] = _sample_count(results, task)
        rows[task] = row
    return rows


def _sample_count(results: dict[str, Any], task: str) -> int:
    samples = results.get("n-samples", {})
    if task in samples:
        return int(samples[task]["effective"])
    members = results.get("group_subtasks", {}).get(task, [])
    return sum(int(samples[name]["effective"]) for name in members if name in samples)


def markdown_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per model, BLiMP acc and PIQA acc / acc_norm (± standard error
    where lm-eval gave one) and the documents scored; chance 0.5."""
    lines = [
        "| model | BLiMP acc (67 paradigms, mean) | BLiMP pairs | PIQA acc | PIQA acc_norm "
        "| PIQA questions | completion exact match | completion chrF | completions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, tasks in rows.items():
        blimp = tasks.get(TASK_NAMES["blimp"], {})
        piqa = tasks.get(TASK_NAMES["piqa"], {})
        completion = tasks.get(TASK_NAMES["completion"], {})
        cells = [
            _with_stderr(blimp, "acc"),
            str(blimp.get("n", "-")),
            _with_stderr(piqa, "acc"),
            _with_stderr(piqa, "acc_norm"),
            str(piqa.get("n", "-")),
            _with_stderr(completion, "exact_match"),
            _with_stderr(completion, "chrf"),
            str(completion.get("n", "-")),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Chance is 0.5 on BLiMP and PIQA; completion: greedy continuation of half a BLiMP "
        "sentence, exact match; lm-evaluation-harness via `selrope eval --tasks`."
    )
    return "\n".join(lines) + "\n"


def _with_stderr(row: dict[str, float], metric: str) -> str:
    if metric not in row:
        return "-"
    if f"{metric}_stderr" not in row:
        return f"{row[metric]:.4f}"
    return f"{row[metric]:.4f} ± {row[f'{metric}_stderr']:.4f}"


def main(argv: list[str] | None = None) -> int:
    """``tasks``: write the task configs; anything else: lm-eval's command line, with selrope's
    models registered (``--model selrope`` or ``--model hf``, ``--model_args pretrained=RUN``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tasks"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m selrope.evaluation.harness tasks")
        parser.add_argument("--out", required=True, help="folder for the task configs")
        parser.add_argument("--blimp-dir", default=None)
        parser.add_argument("--piqa-dir", default=None)
        args = parser.parse_args(argv[1:])
        tasks = [t for t, d in (("blimp", args.blimp_dir), ("piqa", args.piqa_dir)) if d]
        names = write_task_configs(args.out, tasks, args.blimp_dir, args.piqa_dir)
        print(f"wrote {', '.join(names)} to {args.out} (use --include_path {args.out})")
        return 0
    import selrope.evaluation.lm_eval_model  # noqa: F401  (registers lm-eval model "selrope")
    import selrope.models.hf  # noqa: F401  (registers transformers model_type "selrope")

    os.environ.update(OFFLINE_ENV)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
