"""Causal softmax attention: SDPA vs the float64 reference, and KV-cache decoding vs one pass."""

import pytest
import torch

from selrope.ops import attention_with_cache, causal_attention, reference_attention

F64 = torch.float64


def make_qkv(B, T, H, D, Dv, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, d, generator=gen, dtype=dtype) for d in (D, D, Dv)]


@pytest.mark.parametrize(("T", "scale"), [(1, None), (17, None), (40, 0.2)])
def test_sdpa_matches_reference_values_and_gradients(T, scale):
    inputs = [x.requires_grad_() for x in make_qkv(2, T, 3, 8, 6)]
    o = causal_attention(*inputs, scale=scale)
    o_ref = reference_attention(*inputs, scale=scale)
    assert o.shape == (2, T, 3, 6)
    torch.testing.assert_close(o, o_ref)
    w = torch.randn_like(o)
    got = torch.autograd.grad((o * w).sum(), inputs)
    want = torch.autograd.grad((o_ref * w).sum(), inputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_float32_matches_float64_reference():
    q, k, v = make_qkv(2, 33, 2, 16, 16, dtype=torch.float32)
    o = causal_attention(q, k, v)
    assert o.dtype == torch.float32
    torch.testing.assert_close(
        o.double(), reference_attention(q.double(), k.double(), v.double()), rtol=1e-5, atol=1e-5
    )


def test_reference_is_causal():
    """Changing a future token changes nothing before it."""
    q, k, v = make_qkv(1, 10, 2, 4, 4)
    k2, v2 = k.clone(), v.clone()
    k2[:, 6], v2[:, 6] = 5.0, -5.0
    o, o2 = reference_attention(q, k, v), reference_attention(q, k2, v2)
    torch.testing.assert_close(o[:, :6], o2[:, :6])
    assert not torch.allclose(o[:, 6], o2[:, 6])


def test_prefill_then_chunks_then_steps_equal_one_pass():
    q, k, v = make_qkv(2, 24, 3, 8, 5)
    o_full = causal_attention(q, k, v)
    cache_k = cache_v = None
    outputs = []
    # A prefill of 7, a multi-token chunk of 5 appended to the cache, then one-token steps.
    bounds = [0, 7, 12, *range(13, 25)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        previous = None if cache_k is None else (cache_k.clone(), cache_v.clone())
        o, new_k, new_v = attention_with_cache(
            q[:, start:end], k[:, start:end], v[:, start:end], cache_k, cache_v
        )
        if previous is not None:  # the caches passed in are left as they were
            assert torch.equal(cache_k, previous[0]) and torch.equal(cache_v, previous[1])
        assert new_k.shape == (2, end, 3, 8) and new_v.shape == (2, end, 3, 5)
        outputs.append(o)
        cache_k, cache_v = new_k, new_v
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full)
    torch.testing.assert_close(cache_k, k)
    torch.testing.assert_close(cache_v, v)


def test_cache_path_gradients_match_reference():
    q, k, v = (x.requires_grad_() for x in make_qkv(1, 9, 2, 4, 4))
    _, cache_k, cache_v = attention_with_cache(q[:, :4], k[:, :4], v[:, :4])
    o_new, _, _ = attention_with_cache(q[:, 4:], k[:, 4:], v[:, 4:], cache_k, cache_v)
    o_ref = reference_attention(q, k, v)[:, 4:]
    torch.testing.assert_close(o_new, o_ref)
    w = torch.randn_like(o_new)
    got = torch.autograd.grad((o_new * w).sum(), (q, k, v))
    want = torch.autograd.grad((o_ref * w).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_validation_names_the_argument():
    q, k, v = make_qkv(2, 5, 2, 4, 3)
    with pytest.raises(ValueError, match="k must have shape"):
        causal_attention(q, k[:, :4], v)
    with pytest.raises(ValueError, match="v must have shape"):
        reference_attention(q, k, v[:1])
    with pytest.raises(ValueError, match="share one floating-point dtype"):
        causal_attention(q, k.float(), v)
    with pytest.raises(ValueError, match="given together"):
        attention_with_cache(q, k, v, cache_k=k)
    with pytest.raises(ValueError, match="cache_k must have shape"):
        attention_with_cache(q, k, v, cache_k=k[..., :2], cache_v=v)
    with pytest.raises(ValueError, match="cache_v must have shape"):
        attention_with_cache(q, k, v, cache_k=k, cache_v=v[:, :3])
