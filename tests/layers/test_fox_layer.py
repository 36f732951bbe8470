"""The FoX layer: its forget-gate initialisation, and gates of 1 giving plain attention."""

from __future__ import annotations

import pytest
import torch

from selrope.layers import Attention, ForgettingAttention
from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE


def test_gates_start_near_one_in_a_language_model() -> None:
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=11, d_model=32, n_layers=2, n_heads=4, mixer="fox"))
    x = torch.nn.functional.normalize(torch.randn(2, 9, 32), dim=-1) * 32**0.5  # RMS-normed
    for block in model.blocks:
        # The model's init (normal weights, zero Linear biases) leaves the gate bias alone.
        assert torch.equal(block.mixer.forget_bias, torch.full((4,), 5.0))
        gates = block.mixer.log_forget(x).exp()
        assert gates.shape == (2, 9, 4) and gates.dtype == torch.float32
        assert bool((gates > 0.98).all()) and bool((gates < 1).all())


def test_bias_init_is_configurable_and_checked() -> None:
    model = LanguageModel(
        LMConfig.from_dict(dict(vocab_size=11, mixer="fox", forget_bias_init=0.0))
    )
    assert torch.equal(model.blocks[0].mixer.forget_bias, torch.zeros(4))
    with pytest.raises(ValueError, match="forget_bias_init must be a finite float; got inf"):
        LMConfig.from_dict(dict(vocab_size=11, mixer="fox", forget_bias_init=float("inf")))
    with pytest.raises(ValueError, match="forget_bias_init must be a finite float; got 'high'"):
        ForgettingAttention(32, 4, forget_bias_init="high")


@pytest.mark.parametrize("rotary", [{"type": "rope"}, SELECTIVE_LM_RECIPE])
def test_gates_of_one_give_the_attention_layer(rotary: dict) -> None:
    torch.manual_seed(1)
    fox = ForgettingAttention(32, 4, rotary)
    attention = Attention(32, 4, rotary)
    attention.load_state_dict(fox.state_dict(), strict=False)
    with torch.no_grad():
        fox.forget_bias.fill_(200.0)  # logsigmoid(200) is 0 in float32: every f is exactly 1
    x = torch.randn(2, 12, 32)
    segment_ids = torch.tensor([[0] * 5 + [1] * 7, [0] * 12])
    y_fox, cache = fox(x, segment_ids=segment_ids)
    y_attention, _ = attention(x, segment_ids=segment_ids)
    assert torch.equal(cache.cumulative_log_forget, torch.zeros(2, 12, 4))
    torch.testing.assert_close(y_fox, y_attention)
    # With the initial gates the decay is visible.
    with torch.no_grad():
        fox.forget_bias.fill_(0.0)
    assert not torch.allclose(fox(x, segment_ids=segment_ids)[0], y_attention, atol=1e-3)
