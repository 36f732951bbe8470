"""Forward+backward time and memory of the rotary embeddings, as ratios to RoPE in the same run.

Rows: apply_rotary alone (q and k with precomputed per-head angles), RoPE, CARoPE, Selective
RoPE with default options, and Selective RoPE's LM recipe (full-rank + SiLU conv + phase gate).

Memory column: on CPU, "saved MiB" is the size of the tensors autograd keeps from forward to
backward (via ``torch.autograd.graph.saved_tensors_hooks``), counting each storage once and
excluding the inputs q, k, x and the parameters (which exist anyway): the activation memory a
layer's rotary embedding adds during training. It is not the transient peak inside forward. On
CUDA, "peak MiB" is ``torch.cuda.max_memory_allocated`` during forward+backward minus the memory
allocated before it (inputs included in neither).

    python benchmarks/rotary.py [--device cuda] [--quick] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from measure import memory_mib, recording_saved_tensors, time_ms_interleaved

from selrope.rotary import SELECTIVE_LM_RECIPE, apply_rotary, build_rotary

CASES = {
    "apply_rotary": None,
    "rope": {"type": "rope"},
    "carope": {"type": "carope"},
    "selective (default)": {"type": "selective"},
    "selective (LM recipe)": dict(SELECTIVE_LM_RECIPE),
}


def _step_function(name: str, B: int, T: int, H: int, D: int, device: torch.device):
    """Returns (step, exclude): step() runs forward+backward; exclude = storages not counted."""
    d = H * D
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, T, H, D, generator=g).to(device).requires_grad_() for _ in range(2))
    x = torch.randn(B, T, d, generator=g).to(device).requires_grad_()
    grad_q, grad_k = (torch.randn(B, T, H, D, generator=g).to(device) for _ in range(2))
    if CASES[name] is None:
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

    def step(saved: list | None = None) -> None:
        with recording_saved_tensors(saved):
            q_rot, k_rot = forward()
        torch.autograd.backward((q_rot, k_rot), (grad_q, grad_k))
        for leaf in leaves:
            leaf.grad = None

    return step, {leaf.untyped_storage().data_ptr() for leaf in leaves}


def run(device: torch.device, lengths: list[int], B: int, H: int, D: int, repeats: int) -> list:
    rows = []
    for T in lengths:
        steps, memory = {}, {}
        for name in CASES:
            steps[name], exclude = _step_function(name, B, T, H, D, device)
            memory[name] = memory_mib(steps[name], device, exclude)
        times = time_ms_interleaved(steps, device, repeats)
        measured = {name: (times[name], memory[name]) for name in CASES}
        rope_ms, rope_mem = measured["rope"]
        for name, (ms, memory) in measured.items():
            rows.append(
                {
                    "T": T,
                    "embedding": name,
                    "fwd_bwd_ms": round(ms, 3),
                    "time_vs_rope": round(ms / rope_ms, 3),
                    "memory_mib": round(memory, 2),
                    "memory_vs_rope": round(memory / rope_mem, 3) if rope_mem else None,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="one short length, one repeat")
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    B, H, D = (2, 4, 128) if args.quick else (8, 4, 128)
    lengths = [256] if args.quick else [512, 2048, 8192]
    repeats = 1 if args.quick else args.repeats
    rows = run(device, lengths, B, H, D, repeats)
    memory_name = "peak MiB" if device.type == "cuda" else "saved MiB"
    print(f"device={device} B={B} H={H} D={D} float32, median of {repeats} fwd+bwd (interleaved)")
    header = (
        f"{'T':>6} {'embedding':<22} {'fwd+bwd ms':>11} {'x RoPE':>7} "
        f"{memory_name:>10} {'x RoPE':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "-" if row["memory_vs_rope"] is None else f"{row['memory_vs_rope']:.2f}"
        print(
            f"{row['T']:>6} {row['embedding']:<22} {row['fwd_bwd_ms']:>11.2f} "
            f"{row['time_vs_rope']:>7.2f} {row['memory_mib']:>10.1f} {ratio:>7}"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"device": str(device), "B": B, "H": H, "D": D, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
