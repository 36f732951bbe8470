import json
import math

import pytest
import torch
from torch import nn

from selrope.training import TrainConfig, build_optimizer, lr_schedule, parameter_groups


def test_config_json_round_trip():
    cfg = TrainConfig(steps=50, betas=(0.8, 0.95), grad_clip=None, early_stop_accuracy=0.99)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.betas == (0.8, 0.95)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("lr", -1.0),
        ("precision", "fp16"),
        ("warmup_steps", 51),
        ("seed", -3),
        ("lr_decay", "exponential"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"steps": 50, field: value})


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"steps": 3, "bogus": 1})


def test_device_and_precision_resolution():
    cfg = TrainConfig(device="cpu")
    assert cfg.resolved_device() == torch.device("cpu")
    assert cfg.autocast_dtype(torch.device("cpu")) is None
    assert cfg.autocast_dtype(torch.device("cuda")) is torch.bfloat16
    assert TrainConfig(precision="fp32").autocast_dtype(torch.device("cuda")) is None
    assert TrainConfig(precision="bf16").autocast_dtype(torch.device("cpu")) is torch.bfloat16


class GroupedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)  # weight decays, bias does not
        self.layer_norm = nn.LayerNorm(4)
        self.norm_mix = nn.Parameter(torch.ones(4, 4))  # 2-D, but "norm" in its name
        self.freqs = nn.Parameter(torch.ones(2))  # 1-D
        self.gate_table = nn.Parameter(torch.ones(3, 4))  # 2-D, marked
        self.gate_table._no_weight_decay = True
        self.frozen = nn.Parameter(torch.ones(4, 4), requires_grad=False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: must appear once


def test_parameter_groups_follow_the_decay_rule():
    groups = parameter_groups(GroupedModel(), weight_decay=0.3)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["param_names"]) == ["embed.weight", "proj.weight"]
    assert sorted(no_decay["param_names"]) == [
        "freqs",
        "gate_table",
        "layer_norm.bias",
        "layer_norm.weight",
        "norm_mix",
        "proj.bias",
    ]
    assert all(len(g["params"]) == len(g["param_names"]) for g in groups)


def test_build_optimizer_is_adamw_with_config_hyperparameters():
    cfg = TrainConfig(lr=3e-3, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-7)
    opt = build_optimizer(GroupedModel(), cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-7 for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == 8  # tied once, frozen left out


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_schedule(0, cfg) == pytest.approx(0.1)
    assert lr_schedule(4, cfg) == pytest.approx(0.5)
    assert lr_schedule(9, cfg) == pytest.approx(1.0)
    assert lr_schedule(10, cfg) == pytest.approx(1.0)
    assert lr_schedule(55, cfg) == pytest.approx(0.55)  # half way down the cosine
    assert lr_schedule(100, cfg) == pytest.approx(0.1)
    assert lr_schedule(500, cfg) == pytest.approx(0.1)
    decay = [lr_schedule(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_lr_schedule_linear_decay_falls_on_a_straight_line_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, lr_decay="linear")
    assert lr_schedule(4, cfg) == pytest.approx(0.5)  # the same warmup
    for step in range(10, 101):
        assert lr_schedule(step, cfg) == pytest.approx(1.0 - 0.9 * (step - 10) / 90)
    assert lr_schedule(500, cfg) == pytest.approx(0.1)


def test_lr_schedule_defaults_and_no_warmup():
    assert TrainConfig(steps=200).resolved_warmup_steps == 20
    cfg = TrainConfig(steps=10, lr=2.0, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_schedule(0, cfg) == 2.0
    assert lr_schedule(5, cfg) == pytest.approx(1.0)
    assert lr_schedule(10, cfg) == 0.0
    assert math.isclose(lr_schedule(9, cfg), 2.0 * 0.5 * (1 + math.cos(math.pi * 0.9)))
