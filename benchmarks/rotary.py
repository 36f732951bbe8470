"""Forward+backward time and memory of the rotary embeddings, as ratios to RoPE in the same run.

Rows: apply_rotary alone (q and k with precomputed per-head angles), RoPE, CARoPE, Selective
RoPE with default options, and Selective RoPE's LM recipe (full-rank + SiLU conv + phase gate).

Memory column: on CPU, "saved MiB" is the size of the tensors autograd keeps from forward to
backward (via ``torch.autograd.graph.saved_tensors_hooks``), counting each storage once and
excluding the inputs q, k, x and the parameters (which exist anyway): the activation memory a
layer's rotary embedding adds during training. It is not the transient peak inside forward. On
CUDA, "peak MiB" is ``torch.cuda.max_memory_allocated`` during forward+backward minus the memory
allocated before it (inputs included in neither).

On CUDA the rotary rows run twice, on the PyTorch path ("[torch]") and on the fused Triton
kernel ("[triton]"), under bf16 autocast by default, and fla's Triton RoPE is the baseline
("rope (fla)", when fla-core is installed): the last column divides by it.

    python benchmarks/rotary.py [--device cuda] [--quick] [--compile] [--lengths 2048,8192]
        [--json rows.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os

import torch
from measure import memory_mib, recording_saved_tensors, time_ms_interleaved

from selrope.rotary import SELECTIVE_LM_RECIPE, apply_rotary, build_rotary
from selrope.rotary.fused import TRITON_SWITCH
from selrope.training.host_memory import keep_freed_memory

CASES = {
    "apply_rotary": None,
    "rope": {"type": "rope"},
    "carope": {"type": "carope"},
    "selective (default)": {"type": "selective"},
    "selective (LM recipe)": dict(SELECTIVE_LM_RECIPE),
}


FLA_ROPE = "rope (fla)"


def case_names(device: torch.device) -> list[str]:
    """The rows measured on this device: every case; on CUDA each rotary on both backends and
    fla's RoPE when installed."""
    if device.type != "cuda":
        return list(CASES)
    names = ["apply_rotary"]
    names += [f"{name} [{backend}]" for name in CASES if CASES[name] for backend in BACKENDS]
    return names + ([FLA_ROPE] if importlib.util.find_spec("fla") else [])


BACKENDS = {"torch": "0", "triton": "1"}  # row suffix -> SELROPE_TRITON


def _backend(name: str) -> tuple[str, str | None]:
    """'selective (default) [triton]' -> ('selective (default)', '1')."""
    for backend, switch in BACKENDS.items():
        if name.endswith(f" [{backend}]"):
            return name.removesuffix(f" [{backend}]"), switch
    return name, None


def _step_function(
    name: str,
    B: int,
    T: int,
    H: int,
    D: int,
    device: torch.device,
    autocast: bool,
    compile_forward: bool = False,
):
    """Returns (step, exclude): step() runs forward+backward; exclude = storages not counted.
    ``compile_forward``: the forward (and so its backward) goes through torch.compile."""
    name, switch = _backend(name)
    d = H * D
    g = torch.Generator().manual_seed(0)
    # Under autocast q and k arrive in bf16 (outputs of a Linear); x stays float32 (residual).
    qk_dtype = torch.bfloat16 if autocast else torch.float32
    q, k = (
        torch.randn(B, T, H, D, generator=g).to(device, qk_dtype).requires_grad_() for _ in range(2)
    )
    x = torch.randn(B, T, d, generator=g).to(device).requires_grad_()
    grad_q, grad_k = (torch.randn(B, T, H, D, generator=g).to(device, qk_dtype) for _ in range(2))
    if name == FLA_ROPE:
        from fla.modules.rotary import RotaryEmbedding

        module = RotaryEmbedding(D).to(device)

        def forward():
            return module(q, k)

        leaves = [q, k, x]
    elif CASES[name] is None:
        theta = (torch.rand(B, T, H, D // 2, generator=g) * 6.28).to(device).requires_grad_()

        def forward():
            return apply_rotary(q, theta), apply_rotary(k, theta)

        leaves = [q, k, x, theta]
    else:
        module = build_rotary(CASES[name], num_heads=H, head_dim=D, model_dim=d).to(device)

        def forward():
            q_rot, k_rot, _ = module(q, k, x)
            return q_rot, k_rot

        leaves = [q, k, x, *module.parameters(), *module.buffers()]
    if compile_forward:
        forward = torch.compile(forward)

    def step(saved: list | None = None) -> None:
        if switch is not None:
            os.environ[TRITON_SWITCH] = switch
        precision = torch.autocast("cuda", torch.bfloat16) if autocast else contextlib.nullcontext()
        with recording_saved_tensors(saved), precision:
            q_rot, k_rot = forward()
        torch.autograd.backward((q_rot, k_rot), (grad_q, grad_k))
        for leaf in leaves:
            leaf.grad = None

    return step, {leaf.untyped_storage().data_ptr() for leaf in leaves}


def run(
    device: torch.device,
    lengths: list[int],
    B: int,
    H: int,
    D: int,
    repeats: int,
    autocast: bool,
    compile_forward: bool,
) -> list:
    names = case_names(device)
    baseline = (
        FLA_ROPE if FLA_ROPE in names else "rope [torch]" if device.type == "cuda" else "rope"
    )
    rows = []
    for T in lengths:
        steps, memory = {}, {}
        for name in names:
            steps[name], exclude = _step_function(
                name, B, T, H, D, device, autocast, compile_forward
            )
            memory[name] = memory_mib(steps[name], device, exclude)
        times = time_ms_interleaved(steps, device, repeats)
        base_ms, base_mem = times[baseline], memory[baseline]
        for name in names:
            rows.append(
                {
                    "T": T,
                    "embedding": name,
                    "fwd_bwd_ms": round(times[name], 3),
                    "time_vs_baseline": round(times[name] / base_ms, 3),
                    "memory_mib": round(memory[name], 2),
                    "memory_vs_baseline": round(memory[name] / base_mem, 3) if base_mem else None,
                }
            )
        for row in rows[-len(names) :]:
            print_row(row)
    return rows, baseline


def print_row(row: dict) -> None:
    memory = row["memory_vs_baseline"]
    ratio = "-" if memory is None else f"{memory:.2f}"
    print(
        f"{row['T']:>6} {row['embedding']:<31} {row['fwd_bwd_ms']:>11.2f} "
        f"{row['time_vs_baseline']:>7.2f} {row['memory_mib']:>10.1f} {ratio:>7}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="one short length, one repeat")
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--batch", type=int, help="B (default 8, --quick 2)")
    parser.add_argument("--heads", type=int, default=4, help="H (head dim D is 128)")
    parser.add_argument(
        "--float32", action="store_true", help="on CUDA, float32 instead of bf16 autocast"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile every row's forward (and backward)"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does (SELROPE_SYSTEM_MALLOC=1: glibc defaults)
    device = torch.device(args.device)
    B, H, D = (2 if args.quick else 8), args.heads, 128
    B = args.batch or B
    lengths = args.lengths or ([256] if args.quick else [512, 2048, 8192])
    repeats = 1 if args.quick else args.repeats
    autocast = device.type == "cuda" and not args.float32
    memory_name = "peak MiB" if device.type == "cuda" else "saved MiB"
    precision = ("bf16 autocast" if autocast else "float32") + (
        ", torch.compile" if args.compile else ""
    )
    print(
        f"device={device} B={B} H={H} D={D} {precision}, median of {repeats} fwd+bwd "
        "(interleaved); ratios to the baseline row (RoPE, or fla's RoPE on CUDA)"
    )
    header = (
        f"{'T':>6} {'embedding':<31} {'fwd+bwd ms':>11} {'ratio':>7} {memory_name:>10} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header), flush=True)
    rows, baseline = run(device, lengths, B, H, D, repeats, autocast, args.compile)
    if args.json:
        info = {"device": str(device), "B": B, "H": H, "D": D, "precision": precision}
        with open(args.json, "w") as file:
            json.dump({**info, "baseline": baseline, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
