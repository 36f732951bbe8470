"""Write tests/models/release_models/ with the code of commit 6864e61, the last release before
models/io.py: ``git archive 6864e61 src | tar -x -C OLD`` then
``PYTHONPATH=OLD/src python make_release_models.py tests/models/release_models``.

Kept so that the fixtures can be remade; the tests only read what it wrote."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from selrope.models import LanguageModel, LMConfig
from selrope.rotary import SELECTIVE_LM_RECIPE
from selrope.training.checkpoint import save_weights

out = Path(sys.argv[1])
cases = {
    "gla-selective-tied": dict(mixer="gla", rotary=SELECTIVE_LM_RECIPE, tie_embeddings=True),
    "attention-rope": dict(mixer="attention", rotary={"type": "rope"}),
    "fox-carope": dict(mixer="fox", rotary={"type": "carope"}),
    "gdn-nope": dict(mixer="gdn", rotary={"type": "nope"}),
}
ids = torch.randint(0, 23, (2, 13), generator=torch.Generator().manual_seed(7))
expected = {"input_ids": ids}
for i, (name, options) in enumerate(cases.items()):
    torch.manual_seed(i)
    config = LMConfig(vocab_size=23, d_model=16, n_layers=1, n_heads=2, chunk_size=8, **options)
    model = LanguageModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out / name)
    with torch.no_grad():
        expected[name] = model(ids).contiguous()
    if name == "gla-selective-tied":
        save_weights(model, out / "checkpoint-weights.safetensors")
save_file(expected, str(out / "expected_logits.safetensors"))
