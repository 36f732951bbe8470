"""BLiMP and PIQA through lm-evaluation-harness (extras ``hf`` + ``eval``), fully offline.

The task configs are written at run time from local files (absolute paths, ``dataset_path:
json``), with the prompts of lm-eval's own ``blimp`` and ``piqa`` tasks:

- ``selrope_blimp``: a group of the 67 paradigms ``selrope_blimp_<UID>`` (one JSONL each, from
  the BLiMP release); a sentence pair is right when the grammatical sentence gets the higher
  log-probability (empty context: the model reads it after ``<|endoftext|>``, a document start).
  acc is the unweighted mean over paradigms, as in lm-eval's ``blimp``; chance 0.5.
- ``selrope_piqa``: PIQA validation (``valid.jsonl`` with ``valid-labels.lst`` merged into one
  JSONL beside the configs), "Question: {goal}\\nAnswer:" + either solution; acc and acc_norm,
  chance 0.5.

The model is the transformers bridge (``selrope.models.hf``) inside lm-eval's ``HFLM``. Running
this module runs lm-eval's own command line with selrope registered first:

    python -m selrope.evaluation.harness tasks --blimp-dir D --piqa-dir D --out TASKS
    python -m selrope.evaluation.harness run --model hf --model_args pretrained=RUN/model \\
        --tasks selrope_blimp,selrope_piqa --include_path TASKS --device cpu
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TASKS = ("blimp", "piqa")
TASK_NAMES = {"blimp": "selrope_blimp", "piqa": "selrope_piqa"}
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


def merged_piqa(piqa_dir: str | Path, out_file: Path) -> int:
    """Write PIQA validation with its labels (``label``: 0 or 1) as one JSONL; return its size.

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
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("w") as handle:
        for doc, label in zip(docs, labels, strict=True):
            handle.write(json.dumps({**doc, "label": int(label)}) + "\n")
    return len(docs)


def write_task_configs(
    tasks_dir: str | Path,
    tasks: list[str],
    blimp_dir: str | Path | None = None,
    piqa_dir: str | Path | None = None,
) -> list[str]:
    """Write lm-eval task configs (and PIQA's merged JSONL) for ``tasks`` into ``tasks_dir``.

    Args:
        tasks_dir: where the YAML files go (``--include_path`` of lm-eval).
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
            config = {
                "task": name,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"train": str(path.resolve())}},
                "output_type": "multiple_choice",
                "validation_split": "train",
                "doc_to_text": "",
                "doc_to_target": 0,
                "doc_to_choice": "{{[sentence_good, sentence_bad]}}",
                "num_fewshot": 0,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                "metadata": {"version": 1.0},
            }
            (tasks_dir / f"{name}.yaml").write_text(_yaml_text(config))
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
        merged_piqa(piqa_dir, data_file)
        config = {
            "task": TASK_NAMES["piqa"],
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"validation": str(data_file.resolve())}},
            "output_type": "multiple_choice",
            "validation_split": "validation",
            "doc_to_text": "Question: {{goal}}\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": "{{[sol1, sol2]}}",
            "num_fewshot": 0,
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
            "metadata": {"version": 1.0},
        }
        (tasks_dir / f"{TASK_NAMES['piqa']}.yaml").write_text(_yaml_text(config))
        names.append(TASK_NAMES["piqa"])
    return names


def harness_model(
    model_dir: str | Path, device: str = "cpu", batch_size: int = 16
) -> Any:  # lm_eval.models.huggingface.HFLM
    """lm-eval's ``HFLM`` around a selrope model directory and its ``tokenizer.json``.

    Raises:
        ValueError: the directory has no tokenizer.json (the harness scores text).
    """
    from lm_eval.models.huggingface import HFLM

    from selrope.models.hf import SelropeForCausalLM, SelropeTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(
            f"{str(model_dir)!r} holds no tokenizer.json: the harness needs the corpus tokenizer "
            f"beside the weights (copy it from the prepared corpus)"
        )
    model = SelropeForCausalLM.from_pretrained(model_dir, device_map=device)
    # Not AutoTokenizer: directories saved before config.json named model_type load too.
    tokenizer = SelropeTokenizer.from_pretrained(model_dir)
    return HFLM(
        pretrained=model,
        backend="causal",
        tokenizer=tokenizer,
        batch_size=batch_size,
        device=device,
    )


def evaluate_tasks(
    lm: Any, task_names: list[str], tasks_dir: str | Path, limit: int | None = None
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on the configs in ``tasks_dir`` with the offline switches set.

    Returns:
        lm-eval's results dict (``results``, ``groups``, ``configs``, ``n-samples``, ...),
        without per-sample logs.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    os.environ.update(OFFLINE_ENV)
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=task_names,
        task_manager=TaskManager(include_path=str(tasks_dir)),
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,
    )


def summary_rows(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {"acc": ..., "acc_norm": ..., "n": ...}}`` for the groups and plain tasks that
    were asked for (not the 67 BLiMP paradigms)."""
    rows = {}
    for task in (TASK_NAMES["blimp"], TASK_NAMES["piqa"]):
        values = results.get("results", {}).get(task)
        if values is None:
            continue
        row = {}
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in values:
                row[metric] = float(values[f"{metric},none"])
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
    """A markdown table: one row per model, BLiMP acc and PIQA acc / acc_norm (chance 0.5)."""
    lines = [
        "| model | BLiMP acc (67 paradigms, mean) | PIQA acc | PIQA acc_norm |",
        "|---|---|---|---|",
    ]
    for name, tasks in rows.items():
        blimp = tasks.get(TASK_NAMES["blimp"], {})
        piqa = tasks.get(TASK_NAMES["piqa"], {})
        cells = [blimp.get("acc"), piqa.get("acc"), piqa.get("acc_norm")]
        lines.append(
            f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in cells) + " |"
        )
    lines.append("")
    lines.append("Chance is 0.5 on both; lm-evaluation-harness via `selrope eval --tasks`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``tasks``: write the task configs; anything else: lm-eval's command line, with the
    selrope classes registered (``--model hf --model_args pretrained=RUN/model``)."""
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
    import selrope.models.hf  # noqa: F401  (registers model_type "selrope")

    os.environ.update(OFFLINE_ENV)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
