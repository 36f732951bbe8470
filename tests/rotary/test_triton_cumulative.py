"""The fused cumulative-rotation Triton kernel against the PyTorch path, on CPU via Triton's
interpreter (``TRITON_INTERPRET=1``) at small shapes: values, gradients of q, k, the increments
and the carried phase, odd T and tiles that straddle the end."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch

from selrope.rotary import SELECTIVE_LM_RECIPE, build_rotary
from selrope.rotary.apply import apply_rotary
from selrope.rotary.cumulative import cumulative_angles
from selrope.rotary.fused import choose_backend, cumulative_rotary

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (the `gpu` extra): the fused kernel cannot be tested",
)


@pytest.fixture(scope="module")
def kernel():
    """The kernel module and the device to test it on (CPU: Triton's interpreter, switched on by
    tests/conftest.py before anything imports triton)."""
    module = importlib.import_module("selrope.rotary.triton_cumulative")
    if torch.cuda.is_available():
        return module, "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1: the kernel cannot run")
    return module, "cpu"


def _inputs(B, T, H, D, device, seed=0, with_frequencies=True, with_initial=True, scale=1e3):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, D, generator=g) for _ in range(2))
    increments = 1.0 + 0.5 * torch.randn(B, T, H, D // 2, generator=g)
    frequencies = torch.rand(D // 2, generator=g) if with_frequencies else None
    initial = None
    if with_initial:
        initial = torch.randn(B, H, D // 2, generator=g, dtype=torch.float64) * scale
    tensors = [q, k, increments, frequencies, initial]
    return [None if t is None else t.to(device) for t in tensors]


def _torch_path(q, k, increments, frequencies, initial):
    theta, final = cumulative_angles(increments, frequencies, initial)
    return apply_rotary(q, theta), apply_rotary(k, theta), final


def _compare(kernel_outputs, reference_outputs, leaves, seed=5):
    g = torch.Generator().manual_seed(seed)
    weights = [
        torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in reference_outputs
    ]
    for got, want in zip(kernel_outputs, reference_outputs, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-4, atol=5e-5)
    grads = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(kernel_outputs, weights, strict=True)), leaves
    )
    expected = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(reference_outputs, weights, strict=True)), leaves
    )
    for got, want in zip(grads, expected, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("T", "block_t", "with_frequencies", "with_initial"),
    [(37, 16, True, True), (1, 16, True, False), (32, 16, False, True), (5, 64, True, True)],
)
def test_kernel_matches_torch_path(kernel, T, block_t, with_frequencies, with_initial):
    module, device = kernel
    q, k, increments, frequencies, initial = _inputs(
        2, T, 3, 12, device, with_frequencies=with_frequencies, with_initial=with_initial
    )
    leaves = [t.requires_grad_() for t in (q, k, increments, initial) if t is not None]
    outputs = module.FusedCumulativeRotary.apply(q, k, increments, frequencies, initial, block_t)
    _compare(outputs, _torch_path(q, k, increments, frequencies, initial), leaves)


def test_kernel_carries_the_phase_between_calls(kernel):
    """Two chunks, the second starting from the first's final phase, equal one call."""
    module, device = kernel
    q, k, increments, frequencies, initial = _inputs(1, 45, 2, 8, device, seed=1)
    whole = module.FusedCumulativeRotary.apply(q, k, increments, frequencies, initial, 16)
    first = module.FusedCumulativeRotary.apply(
        q[:, :20], k[:, :20], increments[:, :20], frequencies, initial, 16
    )
    second = module.FusedCumulativeRotary.apply(
        q[:, 20:], k[:, 20:], increments[:, 20:], frequencies, first[2], 16
    )
    torch.testing.assert_close(torch.cat([first[0], second[0]], 1), whole[0], rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(torch.cat([first[1], second[1]], 1), whole[1], rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(second[2], whole[2], rtol=1e-12, atol=1e-9)


def test_kernel_stays_exact_at_large_phases(kernel):
    """A carried phase of ~10^6 rad: float64 carry and per-tile reduction keep the rotation."""
    module, device = kernel
    q, k, increments, frequencies, initial = _inputs(1, 40, 1, 8, device, seed=2, scale=1e6)
    outputs = module.FusedCumulativeRotary.apply(q, k, increments, frequencies, initial, 16)
    reference = _torch_path(q, k, increments, frequencies, initial)
    torch.testing.assert_close(outputs[0], reference[0], rtol=1e-4, atol=5e-5)


def test_kernel_bf16_q_k(kernel):
    module, device = kernel
    q, k, increments, frequencies, initial = _inputs(1, 20, 2, 8, device, seed=3)
    q, k = q.bfloat16(), k.bfloat16()
    q_rot, k_rot, _ = module.FusedCumulativeRotary.apply(q, k, increments, frequencies, initial)
    reference = _torch_path(q, k, increments, frequencies, initial)
    assert q_rot.dtype == torch.bfloat16
    torch.testing.assert_close(q_rot, reference[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(k_rot, reference[1], rtol=1e-2, atol=1e-2)


def test_selective_module_with_forced_triton_backend(kernel, randomise):
    """The LM recipe module through the kernel: outputs, state and every parameter's gradient."""
    _, device = kernel
    module = randomise(build_rotary(SELECTIVE_LM_RECIPE, num_heads=2, head_dim=8, model_dim=16))
    module = module.to(device)
    g = torch.Generator().manual_seed(4)
    q, k = (torch.randn(2, 70, 2, 8, generator=g).to(device) for _ in range(2))
    x = torch.randn(2, 70, 16, generator=g).to(device)
    results = {}
    for backend in ("torch", "triton"):
        module.backend = backend
        q_rot, k_rot, state = module(q, k, x)
        loss = (q_rot * q.flip(1)).sum() + (k_rot * k.flip(1)).sum()
        grads = torch.autograd.grad(loss, list(module.parameters()))
        results[backend] = (q_rot, k_rot, state.phase, *grads)
    for got, want in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_dispatch_is_per_call_and_falls_back():
    q, k, increments, frequencies, _ = _inputs(1, 4, 1, 4, "cpu")
    assert choose_backend(q, increments, frequencies) == "torch"  # CPU tensors: PyTorch path
    ids = torch.zeros(1, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="segment_ids"):
        cumulative_rotary(q, k, increments, frequencies, segment_ids=ids, backend="triton")
    with pytest.raises(ValueError, match="half-split"):
        cumulative_rotary(q, k, increments, frequencies, interleaved=True, backend="triton")
    trainable = frequencies.clone().requires_grad_()
    with pytest.raises(ValueError, match="frequencies"):
        cumulative_rotary(q, k, increments, trainable, backend="triton")


@pytest.mark.parametrize("T", [1, 70])
def test_rope_through_the_kernel(kernel, T):
    """RoPE's closed-form angles through the kernel (+1 per token from offset - 1), with a state
    offset near 10^6: outputs, the next state and the gradients of q and k."""
    _, device = kernel
    module = build_rotary({"type": "rope", "base": 500000.0}, num_heads=2, head_dim=8, model_dim=16)
    module = module.to(device)
    g = torch.Generator().manual_seed(6)
    q, k = (torch.randn(2, T, 2, 8, generator=g).to(device).requires_grad_() for _ in range(2))
    x = torch.zeros(2, T, 16, device=device)
    state = type(module(q, k, x)[2])(torch.tensor([3, 999_983], device=device))
    results = {}
    for backend in ("torch", "triton"):
        module.backend = backend
        q_rot, k_rot, new_state = module(q, k, x, state)
        grads = torch.autograd.grad((q_rot * q.flip(1)).sum() + (k_rot * k).sum(), [q, k])
        results[backend] = (q_rot, k_rot, *grads)
        assert new_state.offset.tolist() == [3 + T, 999_983 + T]
    for got, want in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_the_kernel_is_the_cuda_default_unless_switched_off(monkeypatch):
    """On CUDA tensors the kernel is chosen unless SELROPE_TRITON=0 (read on every call), never
    for CPU tensors or calls it does not cover."""
    cuda_like = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    cpu_like = SimpleNamespace(is_cuda=False, dtype=torch.float32)
    monkeypatch.delenv("SELROPE_TRITON", raising=False)
    assert choose_backend(cuda_like, None) == "triton"
    assert choose_backend(cpu_like, None) == "torch"
    assert choose_backend(cuda_like, None, segment_ids=torch.zeros(1, 1)) == "torch"
    monkeypatch.setenv("SELROPE_TRITON", "0")
    assert choose_backend(cuda_like, None) == "torch"
