"""Language-model training throughput and memory per mixer x position encoding, as ratios to RoPE.

One training step = forward, loss, backward and AdamW update of a whole ``LanguageModel`` on
packed rows (segment ids with a document boundary in every row, as ``--packing reset`` trains).
Each model is the one ``selrope train --task lm --mixer M --rotary P`` builds (the same configs,
through ``experiments.model_and_train_configs``), so every position encoding a run can name is
measured: the rotary ones, the absolute baselines and those inside attention scores (ALiBi,
CoPE, PaTH: attention and FoX only, skipped with a note elsewhere). Every variant of a mixer is
timed in the same run, interleaved over the repeats so that a busy machine slows them alike; the
ratio columns divide by RoPE's (same mixer).

Memory column: on CPU, "saved MiB" is what autograd keeps from forward to backward of one step
(each storage once, parameters excluded); on CUDA, "peak MiB" is the peak allocated during the
step above what was allocated before it.

    python benchmarks/model.py [--device cuda] [--quick] [--compile] [--positions rope,selective]
        [--json rows.json]

Defaults: the LM study's CPU model (d 128, 4 layers, 4 heads, vocab 8,192, tied embeddings),
B 16, T 256, float32 on CPU; on CUDA bf16 autocast and ``--d-model 1024 --n-layers 6``-sized
settings are up to the flags.
"""

from __future__ import annotations

import argparse

import torch
from measure import memory_mib, recording_saved_tensors, report_rows, time_ms_interleaved

from selrope.experiments.config import model_and_train_configs
from selrope.experiments.positions import POSITIONS
from selrope.models import LanguageModel, lm_loss
from selrope.training.host_memory import keep_freed_memory


def model_config(mixer: str, position: str, args: argparse.Namespace):
    """The ``LMConfig`` of ``selrope train --task lm --mixer mixer --rotary position`` at the
    benchmark's size. ValueError where the position does not work in the mixer."""
    sections = {
        "run": {"task": "lm", "mixer": mixer, "rotary": position, "out": "benchmark"},
        "model": {
            "d_model": args.d_model,
            "n_layers": args.n_layers,
            "n_heads": args.n_heads,
            "tie_embeddings": True,
        },
    }
    return model_and_train_configs(sections, args.vocab)[0]


def make_step(config, args: argparse.Namespace, device: torch.device):
    """(step, excluded storages): step(saved=None) runs one training step of a fresh model on
    fixed random packed rows, recording autograd's saved tensors into ``saved``."""
    torch.manual_seed(0)
    model = LanguageModel(config).to(device)
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), device=device)
    segment_ids = torch.zeros(args.batch, args.seq_len, dtype=torch.long, device=device)
    segment_ids[:, args.seq_len // 3 :] = 1  # one document boundary per row
    autocast = device.type == "cuda"

    def step(saved: list | None = None) -> None:
        with recording_saved_tensors(saved):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = forward(ids[:, :-1], segment_ids=segment_ids)
            loss = lm_loss(logits, ids[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return step, excluded


def run(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for mixer in args.mixers:
        configs = {}
        for position in args.positions:
            try:
                configs[position] = model_config(mixer, position, args)
            except ValueError as error:
                print(f"  skipped {mixer} {position}: {error}", flush=True)
        made = {position: make_step(config, args, device) for position, config in configs.items()}
        steps = {position: step for position, (step, _) in made.items()}
        for step in steps.values():  # a first step (allocator, denormals, autotuning)
            step()
        memory = {
            position: memory_mib(step, device, excluded)
            for position, (step, excluded) in made.items()
        }
        milliseconds = time_ms_interleaved(steps, device, args.repeats)
        tokens = args.batch * args.seq_len
        rope = tokens / milliseconds["rope"]
        for position, ms in milliseconds.items():
            rate = tokens / ms
            rows.append(
                {
                    "mixer": mixer,
                    "position": position,
                    "step_ms": round(ms, 1),
                    "tokens_per_s": round(1000 * rate),
                    "vs_rope": round(rate / rope, 2),
                    "memory_mib": round(memory[position], 1),
                    "memory_vs_rope": round(memory[position] / memory["rope"], 2),
                }
            )
        print(f"  measured {mixer}", flush=True)
    return rows


def _positions(text: str) -> list[str]:
    """'selective,nope' -> ['rope', 'selective', 'nope'] (RoPE first: every ratio divides by it)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in POSITIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown position {unknown[0]!r}; expected names from {','.join(POSITIONS)}"
        )
    return ["rope", *(name for name in dict.fromkeys(names) if name != "rope")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--mixers", type=lambda s: s.split(","), default=["attention", "gla", "gdn"]
    )
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 repeats")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument(
        "--positions",
        type=_positions,
        default=list(POSITIONS),
        help=f"comma-separated subset of {','.join(POSITIONS)} (rope always runs: the baseline)",
    )
    parser.add_argument("--json", help="write the rows to this path")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does (SELROPE_SYSTEM_MALLOC=1: glibc defaults)
    if args.quick:
        args.d_model, args.n_layers, args.vocab, args.batch, args.seq_len = 64, 2, 512, 4, 128
        args.repeats = 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    rows = run(args, device)
    print(
        f"\ndevice={device} threads={torch.get_num_threads()} d={args.d_model} "
        f"layers={args.n_layers} heads={args.n_heads} vocab={args.vocab} B={args.batch} "
        f"T={args.seq_len} {'bf16 autocast' if device.type == 'cuda' else 'float32'}"
        f"{', torch.compile' if args.compile else ''}, "
        f"median of {args.repeats} training steps"
    )
    memory = "peak MiB" if device.type == "cuda" else "saved MiB"
    names = ["mixer", "position", "step ms", "tokens/s", "x RoPE", memory, "memory x RoPE"]
    columns = ["mixer", "position", "step_ms", "tokens_per_s", "vs_rope", "memory_mib"]
    columns.append("memory_vs_rope")
    report_rows(rows, names, columns, args.json)


if __name__ == "__main__":
    main()
