"""Forward+backward time and memory of one mixer layer, as ratios measured in the same run.

Layers: softmax attention, the Forgetting Transformer's attention (FoX), GLA (chunked and
recurrent forms) and Gated DeltaNet (chunked and recurrent), each with NoPE, RoPE and Selective
RoPE (the LM recipe), at d=256, 4 heads, B=4.
Ratio columns: Selective/RoPE (same layer and form), chunked/recurrent (same layer and rotary),
and time(T)/time(T/4) (about 4 for a linear-time layer, 16 for a quadratic one).

Memory column: on CPU, "saved MiB" is what autograd keeps from forward to backward (each storage
once, parameters and the input excluded); on CUDA, "peak MiB" is the peak allocated during
forward+backward above what was allocated before.

The per-token recurrent loops are slow on a CPU (tens of seconds per fwd+bwd at T=4096), so they
are measured only up to ``--max-recurrent-len`` (default 1024). FoX materialises its float32
(B, H, T, T) decay bias (17 GB at T=16384, B=4, H=4), so it is measured only up to
``--max-fox-len`` (default 4096). On CUDA with fla-core installed the chunked layers run twice,
on fla's kernels ("[fla]", ``SELROPE_FLA=1``) and on the PyTorch forms ("[torch]"); the column
fla/torch compares them.

    python benchmarks/mixers.py [--device cuda] [--quick] [--json rows.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import torch
from measure import memory_mib, recording_saved_tensors, report_rows, time_ms

from selrope.layers import Attention, ForgettingAttention, GatedDeltaNet, GatedLinearAttention
from selrope.ops.fla_backend import FLA_SWITCH
from selrope.rotary import SELECTIVE_LM_RECIPE
from selrope.training.host_memory import keep_freed_memory

ROTARIES = {
    "nope": {"type": "nope"},
    "rope": {"type": "rope"},
    "selective": dict(SELECTIVE_LM_RECIPE),
}
LAYERS = {
    "attention": lambda d, h, rotary: Attention(d, h, rotary),
    "fox": lambda d, h, rotary: ForgettingAttention(d, h, rotary),
    "gla chunk": lambda d, h, rotary: GatedLinearAttention(d, h, rotary, form="chunk"),
    "gla recurrent": lambda d, h, rotary: GatedLinearAttention(d, h, rotary, form="recurrent"),
    "gdn chunk": lambda d, h, rotary: GatedDeltaNet(d, h, rotary, form="chunk"),
    "gdn recurrent": lambda d, h, rotary: GatedDeltaNet(d, h, rotary, form="recurrent"),
}


def layer_names(device: torch.device) -> list[str]:
    """Every layer; on CUDA with fla installed the chunked ones as "[fla]" and "[torch]" rows."""
    if device.type != "cuda" or importlib.util.find_spec("fla") is None:
        return list(LAYERS)
    split = [f"{name} [{backend}]" for name in LAYERS if "chunk" in name for backend in FLA_ROWS]
    return [name for name in LAYERS if "chunk" not in name] + split


FLA_ROWS = {"fla": "1", "torch": "0"}  # row suffix -> SELROPE_FLA


def make_step(layer_name: str, rotary: str, B: int, T: int, d: int, H: int, device: torch.device):
    """(step, excluded storages): step(saved=None) runs one forward+backward of the layer."""
    torch.manual_seed(0)
    layer_name, _, suffix = layer_name.partition(" [")
    switch = FLA_ROWS.get(suffix.rstrip("]"))
    layer = LAYERS[layer_name](d, H, ROTARIES[rotary]).to(device)
    x = torch.randn(B, T, d, device=device, requires_grad=True)
    grad = torch.randn(B, T, d, device=device)
    leaves = [x, *layer.parameters(), *layer.buffers()]

    def step(saved: list | None = None) -> None:
        if switch is not None:
            os.environ[FLA_SWITCH] = switch
        with recording_saved_tensors(saved):
            y, _ = layer(x)
        y.backward(grad)
        for leaf in leaves:
            leaf.grad = None

    return step, {leaf.untyped_storage().data_ptr() for leaf in leaves}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def run(device, lengths, B, d, H, repeats, max_len) -> list[dict]:
    """``max_len``: the longest T measured per layer kind ("recurrent", "fox"; others: all)."""
    measured: dict[tuple[str, str, int], tuple[float, float]] = {}
    for T in lengths:
        for layer in layer_names(device):
            if any(kind in layer and limit < T for kind, limit in max_len.items()):
                continue
            for rotary in ROTARIES:
                step, exclude = make_step(layer, rotary, B, T, d, H, device)
                memory = memory_mib(step, device, exclude)
                reps = repeats if "recurrent" not in layer else 1
                measured[layer, rotary, T] = (time_ms(step, device, reps), memory)
                print(f"  measured {layer:14s} {rotary:9s} T={T}", flush=True)
    rows = []
    for (layer, rotary, T), (ms, memory) in measured.items():
        recurrent = layer.replace("chunk", "recurrent").removesuffix(" [fla]")
        recurrent = recurrent.removesuffix(" [torch]")
        torch_form = layer.replace("[fla]", "[torch]")
        rows.append(
            {
                "layer": layer,
                "rotary": rotary,
                "T": T,
                "fwd_bwd_ms": round(ms, 2),
                "memory_mib": round(memory, 2),
                "selective_vs_rope": ratio(ms, measured[layer, "rope", T][0])
                if rotary == "selective"
                else None,
                "chunk_vs_recurrent": ratio(ms, measured.get((recurrent, rotary, T), (None,))[0])
                if "chunk" in layer
                else None,
                "time_vs_quarter_T": ratio(ms, measured.get((layer, rotary, T // 4), (None,))[0]),
                "fla_vs_torch": ratio(ms, measured[torch_form, rotary, T][0])
                if layer.endswith("[fla]")
                else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="short lengths, one repeat")
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-recurrent-len", type=int, default=1024)
    parser.add_argument("--max-fox-len", type=int, default=4096)
    parser.add_argument("--lengths", type=lambda s: [int(n) for n in s.split(",")])
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does (SELROPE_SYSTEM_MALLOC=1: glibc defaults)
    device = torch.device(args.device)
    B, d, H = 4, 256, 4
    lengths = args.lengths or ([64, 256] if args.quick else [256, 1024, 4096, 16384])
    repeats = 1 if args.quick else args.repeats
    max_len = {"recurrent": args.max_recurrent_len, "fox": args.max_fox_len}
    rows = run(device, lengths, B, d, H, repeats, max_len)
    memory_name = "peak MiB" if device.type == "cuda" else "saved MiB"
    print(f"\ndevice={device} B={B} d={d} H={H} float32, median of {repeats} fwd+bwd")
    columns = ["layer", "rotary", "T", "fwd_bwd_ms", "memory_mib", "selective_vs_rope",
               "chunk_vs_recurrent", "time_vs_quarter_T", "fla_vs_torch"]  # fmt: skip
    names = ["layer", "rotary", "T", "fwd+bwd ms", memory_name, "Sel/RoPE", "chunk/rec", "T/(T/4)",
             "fla/torch"]  # fmt: skip
    report_rows(rows, names, columns, args.json)


if __name__ == "__main__":
    main()
