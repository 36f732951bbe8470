"""``selrope data prepare`` (tokenise text into a corpus folder) and ``selrope data info``."""

from __future__ import annotations

import argparse
import re
from typing import Any

from selrope.cli.parser import CommandParser

DESCRIPTION = """\
prepare: stream text into train / val shards in llm.c's format (a killed run, started again
with the same arguments, continues after its last complete shard); info: check a corpus folder
(made here, or llm.c / modded-nanogpt shards) and print what it holds.

examples:
  selrope data prepare --input docs/ --tokenizer bpe:8192 --out corpora/docs
  selrope data prepare --input fineweb-edu/sample/10BT --tokenizer gpt2/tokenizer.json \\
      --workers 8 --out corpora/fineweb-edu
  selrope data info corpora/fineweb-edu
  selrope data info fineweb10B --vocab-size 50257 --eos-id 50256
"""
COUNT = re.compile(r"^(\d+)([kKMG]?)$")
SCALE = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}


def count(text: str) -> int:
    """``"100000000"``, ``"100M"``, ``"50k"`` or ``"1G"`` (decimal) -> an int."""
    match = COUNT.match(text.replace("_", ""))
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a count such as 100000000 or 100M; got {text!r}"
        )
    return int(match[1]) * SCALE[match[2]]


def non_negative(text: str) -> int:
    """A seed: ``"0"``, ``"17"``; a negative or non-integer value is refused."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return int(text)


def patterns(text: str) -> list[str]:
    """``"a*,b*"`` -> ``["a*", "b*"]``."""
    return [pattern for pattern in text.split(",") if pattern]


def build_parser() -> CommandParser:
    parser = CommandParser(prog="selrope data", description=DESCRIPTION)
    actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
    add_prepare_arguments(actions.add_parser("prepare", help="tokenise text into a corpus"))
    add_info_arguments(actions.add_parser("info", help="check a corpus folder, say what it holds"))
    return parser


def add_prepare_arguments(prepare: argparse.ArgumentParser) -> None:
    """What to read and how to tokenise it (``selrope data prepare``)."""
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="text files, .jsonl / .jsonl.gz / .jsonl.zst (a document per line), .parquet (a "
        "document per row), or folders of them (read recursively, files by their names)",
    )
    source.add_argument("--default", action="store_true", help="the CPython stdlib's .py files")
    prepare.add_argument(
        "--tokenizer",
        required=True,
        metavar="SPEC",
        help="byte (byte ids, nothing to train), bpe:VOCAB (train a byte-level BPE of VOCAB "
        "tokens on a sample), or PATH/tokenizer.json (any HF tokenizers file, used unchanged)",
    )
    prepare.add_argument("--out", required=True, metavar="DIR", help="folder for the corpus")
    held_out = prepare.add_mutually_exclusive_group()
    held_out.add_argument(
        "--val-fraction",
        type=float,
        default=argparse.SUPPRESS,
        metavar="F",
        help="share of documents held out for validation (default 0.05)",
    )
    held_out.add_argument(
        "--val-documents",
        type=patterns,
        default=argparse.SUPPRESS,
        metavar="GLOB[,GLOB]",
        help="documents whose names match one of these fnmatch patterns form the validation split",
    )
    prepare.add_argument(
        "--seed",
        type=non_negative,
        default=argparse.SUPPRESS,
        help="seed of the document split (0)",
    )
    prepare.add_argument(
        "--text-field",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the JSONL / Parquet field holding the text (default text)",
    )
    prepare.add_argument(
        "--eos-token",
        default=argparse.SUPPRESS,
        metavar="TOKEN",
        help="end-of-text token of a tokenizer.json (default: <|endoftext|>, <|end_of_text|>, "
        "</s> or <eos>, the first it holds)",
    )
    add_output_arguments(prepare)


def add_output_arguments(prepare: argparse.ArgumentParser) -> None:
    """How ``selrope data prepare`` writes: sample, shard size, workers, overwrite, quiet."""
    from selrope.data.prepare import DEFAULT_SAMPLE_BYTES, DEFAULT_SHARD_TOKENS

    prepare.add_argument(
        "--tokenizer-sample-bytes",
        type=count,
        default=argparse.SUPPRESS,
        metavar="N",
        help=f"text bpe:VOCAB is trained on: the first N bytes of the train documents "
        f"(default {DEFAULT_SAMPLE_BYTES // 10**6}M)",
    )
    prepare.add_argument(
        "--shard-tokens",
        type=count,
        default=argparse.SUPPRESS,
        metavar="N",
        help=f"tokens per shard (default {DEFAULT_SHARD_TOKENS // 10**6}M, as llm.c)",
    )
    prepare.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="tokenising processes (default 1; HF tokenizers already threads each batch; the "
        "output bytes do not depend on N)",
    )
    prepare.add_argument(
        "--overwrite", action="store_true", default=argparse.SUPPRESS,
        help="replace a corpus made with other arguments in --out",
    )  # fmt: skip
    prepare.add_argument("--quiet", action="store_true", help="no progress bar and notes on stderr")


def add_info_arguments(info: argparse.ArgumentParser) -> None:
    """``selrope data info DIR``."""
    info.add_argument("data", metavar="DIR", help="a corpus folder, or a folder of llm.c shards")
    info.add_argument(
        "--vocab-size", type=int, default=None, help="for shards without a tokenizer.json"
    )
    info.add_argument(
        "--eos-id", type=int, default=None, help="for shards without a tokenizer.json"
    )


def run(argv: list[str]) -> None:
    """``selrope data prepare ...`` / ``selrope data info DIR``.

    Raises:
        UsageError: for arguments the parser refuses.
        ValueError: for every refusal of ``prepare_corpus`` / ``open_corpus`` (one line).
    """
    options: dict[str, Any] = vars(build_parser().parse_args(argv))
    action = options.pop("action")
    if action == "info":
        print_info(**options)
        return
    from selrope.data import prepare_corpus

    progress = not options.pop("quiet")
    manifest = prepare_corpus(
        options.pop("input"), options.pop("tokenizer"), options.pop("out"),
        progress=progress, **options,
    )  # fmt: skip
    for split, entry in manifest["splits"].items():
        shards = len(entry["shards"])
        print(
            f"{split}: {entry['tokens']:,} tokens, {entry['documents']:,} documents, "
            f"{shards} shard{'s' if shards > 1 else ''}"
        )
    tokenizer = manifest["tokenizer"]
    print(f"tokenizer {tokenizer['spec']} (vocab {tokenizer['vocab_size']}, "
          f"end-of-text {tokenizer['eos_token']} = {tokenizer['eos_id']})")  # fmt: skip
    skipped = [entry for entry in manifest["skipped"] if entry["reason"].startswith("not text")]
    if skipped:
        print(f"skipped {len(skipped)} files that are not text (listed in manifest.json)")
    print(f"written in {manifest['seconds']:.1f} s")


def print_info(data: str, vocab_size: int | None, eos_id: int | None) -> None:
    """Open (and so check) the corpus in ``data`` and print its splits and fingerprint."""
    from selrope.data import open_corpus

    info = open_corpus(data, vocab_size=vocab_size, eos_id=eos_id)
    tokenizer = info.tokenizer_file.name if info.tokenizer_file else "no tokenizer.json"
    print(f"{info.path}: {info.kind} corpus, {info.dtype.name} tokens, vocab {info.vocab_size}, "
          f"end-of-text id {info.eos_id} ({tokenizer})")  # fmt: skip
    for split, shards in info.splits.items():
        documents = [shard.documents for shard in shards]
        known = "" if None in documents else f", {sum(documents):,} documents"
        print(f"{split}: {info.tokens(split):,} tokens{known} in {len(shards)} shards "
              f"({shards[0].path.name} .. {shards[-1].path.name})")  # fmt: skip
    if info.kind == "llm.c":
        print("documents are found from the end-of-text tokens; token ids are checked per batch")
