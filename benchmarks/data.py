"""``selrope data prepare`` throughput and peak memory against corpus size, beside raw encoding.

For each size (MB of generated JSONL: Wikipedia lead paragraphs from the shared data folder,
repeated with a copy number in front, or generated words when that folder is absent) and each
tokenizer, runs the real command in a child process and reports its wall time, input MB/s and
peak RSS (the largest of the process and its workers, from ``wait4``), and the MB/s inside
``prepare_corpus`` (the manifest's seconds: without the command's start, which imports torch).
In the same run it measures what bounds each path from above: ``json.loads`` over the same
lines, and HF tokenizers' ``encode_batch`` with the BPE the command trained, on the same
documents.

    python benchmarks/data.py                          # 50, 200, 800 MB; byte and bpe:8192
    python benchmarks/data.py --sizes 50,200 --tokenizers byte --json

Goals (issue 20): peak RSS flat in corpus size and under 1 GiB at 800 MB; byte at least
50 MB/s end to end; BPE within 1.5x of raw ``encode_batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIKI = SHARED / "wiki-vital" / "summaries_en.jsonl"
MB = 1_000_000


def source_texts() -> list[str]:
    """Texts to repeat: the wiki-vital lead paragraphs, or generated words without them."""
    if WIKI.is_file():
        return [json.loads(line)["text"] for line in WIKI.read_text().splitlines() if line]
    import random

    rng = random.Random(0)
    words = ["the", "of", "and", "river", "stone", "light", "moves", "under", "green", "city"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(40, 200))) for _ in range(5000)]


def write_jsonl(path: Path, megabytes: int, texts: list[str]) -> int:
    """A JSONL file of about ``megabytes`` MB of ``{"text": ...}`` lines; returns its size."""
    size, copy = 0, 0
    with open(path, "w", encoding="utf-8") as file:
        while size < megabytes * MB:
            for text in texts:
                line = json.dumps({"id": copy, "text": f"({copy}) {text}"}) + "\n"
                file.write(line)
                size += len(line.encode())
                if size >= megabytes * MB:
                    break
            copy += 1
    return path.stat().st_size


def run_prepare(jsonl: Path, tokenizer: str, out: Path, workers: int) -> dict:
    """Wall time and peak RSS of ``selrope data prepare`` on ``jsonl``, in a child process."""
    command = [sys.executable, "-c", "import sys; from selrope.cli import main; main(sys.argv[1:])",
               "data", "prepare", "--input", str(jsonl), "--tokenizer", tokenizer, "--out",
               str(out), "--workers", str(workers), "--quiet"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare failed: {' '.join(command)}")
    manifest = json.loads((out / "manifest.json").read_text())
    tokens = sum(entry["tokens"] for entry in manifest["splits"].values())
    return {"seconds": seconds, "prepare_seconds": manifest["seconds"],
            "peak_rss_mib": usage.ru_maxrss / 1024, "tokens": tokens}  # fmt: skip


def baseline_rss() -> float:
    """Peak RSS (MiB) of a process that only imports the selrope command (torch included)."""
    process = subprocess.Popen([sys.executable, "-c", "import selrope.cli.main"])
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss / 1024


def json_throughput(jsonl: Path, limit: int = 100 * MB) -> float:
    """MB/s of ``json.loads`` over the first ``limit`` bytes of lines."""
    size, started = 0, time.perf_counter()
    with open(jsonl, "rb") as file:
        for line in file:
            json.loads(line)
            size += len(line)
            if size >= limit:
                break
    return size / MB / (time.perf_counter() - started)


def encode_batch_throughput(tokenizer_file: Path, jsonl: Path, limit: int = 20 * MB) -> float:
    """MB/s (UTF-8 text) of ``encode_batch`` on about 1 MB batches of whole documents."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    texts = []
    with open(jsonl, "rb") as file:
        for line in file:
            texts.append(json.loads(line)["text"])
            if sum(map(len, texts)) >= limit:
                break
    batches, batch, chars = [], [], 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if chars >= MB:
            batches.append(batch)
            batch, chars = [], 0
    batches.append(batch)
    size = sum(len(text.encode()) for text in texts)
    started = time.perf_counter()
    for batch in batches:
        tokenizer.encode_batch(batch, add_special_tokens=False)
    return size / MB / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,200,800", help="MB of JSONL, comma-separated")
    parser.add_argument("--tokenizers", default="byte,bpe:8192", help="comma-separated")
    parser.add_argument("--bpe-sizes", default=None, help="sizes for BPE (default: --sizes)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bpe_sizes = [int(s) for s in (args.bpe_sizes or args.sizes).split(",")]
    texts = source_texts()
    rows, reference = [], {}
    with tempfile.TemporaryDirectory(prefix="selrope-bench-") as tmp:
        root = Path(tmp)
        reference["baseline_rss_mib"] = baseline_rss()
        for megabytes in sizes:
            jsonl = root / f"corpus-{megabytes}.jsonl"
            input_bytes = write_jsonl(jsonl, megabytes, texts)
            if "json_loads_mb_s" not in reference:
                reference["json_loads_mb_s"] = json_throughput(jsonl)
            for tokenizer in args.tokenizers.split(","):
                if tokenizer.startswith("bpe") and megabytes not in bpe_sizes:
                    continue
                out = root / f"out-{megabytes}-{tokenizer.replace(':', '')}"
                measured = run_prepare(jsonl, tokenizer, out, args.workers)
                row = {"size_mb": round(input_bytes / MB, 1), "tokenizer": tokenizer,
                       "workers": args.workers, **measured,
                       "mb_s": input_bytes / MB / measured["seconds"],
                       "prepare_mb_s": input_bytes / MB / measured["prepare_seconds"]}  # fmt: skip
                if tokenizer.startswith("bpe") and "encode_batch_mb_s" not in reference:
                    reference["encode_batch_mb_s"] = encode_batch_throughput(
                        out / "tokenizer.json", jsonl
                    )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                subprocess.run(["rm", "-rf", str(out)], check=True)
            jsonl.unlink()
    if args.json:
        print(json.dumps({"rows": rows, "reference": reference}, indent=1))
        return
    print("| JSONL MB | tokenizer | workers | command s | MB/s | in prepare_corpus s | MB/s "
          "| peak RSS MiB | tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row['size_mb']:.0f}", row["tokenizer"], str(row["workers"])]
        cells += [
            f"{row[key]:.1f}" for key in ("seconds", "mb_s", "prepare_seconds", "prepare_mb_s")
        ]
        cells += [f"{row['peak_rss_mib']:.0f}", f"{row['tokens']:,}"]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nimporting the selrope command alone: {reference['baseline_rss_mib']:.0f} MiB peak RSS"
    )
    print(f"json.loads on the same lines: {reference['json_loads_mb_s']:.0f} MB/s")
    if "encode_batch_mb_s" in reference:
        print(f"encode_batch (HF tokenizers, the trained BPE, same documents): "
              f"{reference['encode_batch_mb_s']:.2f} MB/s")  # fmt: skip


if __name__ == "__main__":
    main()
