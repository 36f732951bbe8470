"""Forward+backward time of the chunked recurrences, as ratios to fla's kernels in the same run.

Rows per op (GLA, gated delta rule): selrope's op with ``SELROPE_FLA=1`` (fla's kernel on CUDA
with fla-core installed: what the wrapper adds), selrope's PyTorch form (``SELROPE_FLA=0``), and,
when fla-core is installed, fla's kernel called directly (the baseline, ratio 1). Inputs
``(B, T, H, K)`` with K = V, bf16 on CUDA (float32 on CPU), random log decays near 0 and unit
keys for the delta rule.

    python benchmarks/recurrences.py [--device cuda] [--lengths 2048,8192] [--json rows.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import torch
import torch.nn.functional as F
from measure import report_rows, time_ms_interleaved

from selrope.ops import chunk_gated_delta_rule, chunk_gla
from selrope.ops.fla_backend import FLA_SWITCH
from selrope.training.host_memory import keep_freed_memory


def _inputs(op: str, B: int, T: int, H: int, K: int, device: torch.device, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, K, generator=gen) for _ in range(3))
    if op == "gla":
        g = F.logsigmoid(torch.randn(B, T, H, K, generator=gen) + 4.0)
        tensors = [q, k, v, g]
    else:
        k = F.normalize(k, dim=-1)
        g = F.logsigmoid(torch.randn(B, T, H, generator=gen) + 4.0)
        tensors = [q, k, v, g, torch.rand(B, T, H, generator=gen)]
    # q, k, v and beta in the compute dtype; log decays in float32, as the layers give them
    return [
        t.to(device, dtype if i != 3 else torch.float32).requires_grad_()
        for i, t in enumerate(tensors)
    ]


def _fla_function(op: str):
    if op == "gla":
        from fla.ops.gla import chunk_gla as fla_op
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_op
    return fla_op


def make_step(op: str, variant: str, inputs: list[torch.Tensor]):
    """One forward+backward of ``op`` by ``variant`` ("selrope", "selrope [torch]" or "fla")."""
    selrope_op = chunk_gla if op == "gla" else chunk_gated_delta_rule
    function = _fla_function(op) if variant == "fla" else selrope_op
    switch = "0" if variant == "selrope [torch]" else "1"
    grad = torch.randn_like(inputs[2])

    def step() -> None:
        os.environ[FLA_SWITCH] = switch
        o, _ = function(*inputs)
        o.backward(grad)
        for leaf in inputs:
            leaf.grad = None

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", type=lambda s: [int(n) for n in s.split(",")], default=[2048])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the rows to this path")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does (SELROPE_SYSTEM_MALLOC=1: glibc defaults)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    variants = ["selrope", "selrope [torch]"]
    if device.type == "cuda" and importlib.util.find_spec("fla") is not None:
        variants.append("fla")
    baseline = variants[-1]
    rows = []
    for T in args.lengths:
        for op in ["gla", "gated delta rule"]:
            shape = (args.batch, T, args.heads, args.head_dim)
            steps = {v: make_step(op, v, _inputs(op, *shape, device, dtype)) for v in variants}
            times = time_ms_interleaved(steps, device, args.repeats)
            for variant, ms in times.items():
                ratio = round(ms / times[baseline], 2)
                rows.append(
                    {"T": T, "op": op, "variant": variant, "ms": round(ms, 3), "ratio": ratio}
                )
    print(
        f"device={device} B={args.batch} H={args.heads} K=V={args.head_dim} {dtype}, median of "
        f"{args.repeats} fwd+bwd; ratio to {baseline}"
    )
    names = ["T", "op", "variant", "fwd+bwd ms", "ratio"]
    report_rows(rows, names, ["T", "op", "variant", "ms", "ratio"], args.json)


if __name__ == "__main__":
    main()
