"""``SelropeLM``: a selrope language model behind lm-evaluation-harness's model interface (extra
``eval``), registered with lm-eval as the model ``selrope``: log-likelihoods, rolling
log-likelihoods and greedy ``generate_until``.

    lm = SelropeLM("runs/lm-attention/attention-rope-s0")  # a run, or its model/ directory
    lm_eval.simple_evaluate(model=lm, tasks=[...])
    python -m selrope.evaluation.harness run --model selrope --model_args pretrained=RUN ...

Scoring. Each ``(context, continuation)`` request is tokenized as lm-eval's ``TemplateLM`` does
(an empty context becomes the end-of-text token, a document start; trailing spaces of the context
move to the continuation) with the corpus ``tokenizer.json`` as the corpus was encoded. The
requests are sorted by length and cut into batches of at most ``batch_size`` requests and at most
``max_batch_tokens`` padded tokens; a batch is right-padded (every mixer is causal, so real tokens
never read the pads) and read by ``LanguageModel.forward`` once. A request's log-likelihood is the
sum, over its continuation tokens, of the log-softmax of the logits one position earlier: the
model's own log-probability of the continuation, whichever requests share its batch (up to float32
rounding of the batched matrix products, ~1e-5).

Why not lm-eval's ``HFLM`` around the transformers bridge (which works: ``--model hf``): HFLM
log-softmaxes every padded position and then takes each request apart in Python (a slice, an
argmax and a gather per request), and it batches by rows only, so long rows make
``(B, T, vocab)`` logits too large for the CPU's caches (a forward pass of 2,048 padded tokens
costs 25-40 % more per token than one of 512-1,024 with these models). On 5,680 BLiMP and PIQA
requests to the 2.1 M-parameter attention model of docs/results.md §9 (one CPU thread, quiet
machine) HFLM took 1.78 ms per request at batch size 8 and 1.57 ms at 32, SelropeLM 1.26 ms, with
the same log-likelihoods to 1e-4 and the same greedy flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from selrope.data import EOS_TOKEN, load_tokenizer
from selrope.evaluation.runs import load_model, model_directory
from selrope.models.io import TOKENIZER_FILE

# (context, continuation) strings, context token ids, continuation token ids: the request form
# TemplateLM hands to _loglikelihood_tokens.
TokenRequest = tuple[tuple[str, str], list[int], list[int]]


@register_model("selrope")
class SelropeLM(TemplateLM):
    """lm-eval's ``loglikelihood``, ``loglikelihood_rolling`` and (greedy) ``generate_until``
    for a saved selrope model.

    Args:
        pretrained: a model directory (``config.json`` + ``model.safetensors`` +
            ``tokenizer.json``) or a training run holding one in ``model/``.
        batch_size: most requests per forward pass (lm-eval's ``--batch_size``).
        max_batch_tokens: most padded tokens per forward pass (a longer request goes alone). The
            default keeps float32 logits of an 8,192-token vocabulary at 24 MiB, below the 32 MiB
            above which glibc hands out fresh, page-faulting memory for every batch.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``; lm-eval's command line
            passes ``"cuda:0"`` unless told ``--device cpu``).

    Raises:
        ValueError: not a model directory, no ``tokenizer.json`` beside the weights, a batch
            limit below 1, or a CUDA device without CUDA.
    """

    def __init__(
        self,
        pretrained: str | Path,
        batch_size: int | str = 64,
        max_batch_tokens: int | str = 768,
        device: str = "cpu",
    ):
        super().__init__()
        model_dir = model_directory(pretrained)
        if not (model_dir / TOKENIZER_FILE).is_file():
            raise ValueError(
                f"{str(model_dir)!r} holds no {TOKENIZER_FILE}: lm-eval scores text, so the corpus "
                f"tokenizer must lie beside the weights (copy it from the prepared corpus)"
            )
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_batch_tokens = _positive_int("max_batch_tokens", max_batch_tokens)
        self._device = torch.device(device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available (use device cpu)")
        self.model = load_model(model_dir, self._device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self._eot_token_id = self.tokenizer.token_to_id(EOS_TOKEN)
        if self._eot_token_id is None:
            raise ValueError(f"{str(model_dir)!r}: {TOKENIZER_FILE} has no {EOS_TOKEN} token")
        self.max_length = self.model.config.max_positions
        self.model_dir = model_dir

    @property
    def eot_token_id(self) -> int:
        return self._eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(self.model_dir / TOKENIZER_FILE)

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records under ``config`` in its results."""
        return {"model_dir": str(self.model_dir), "max_batch_tokens": self.max_batch_tokens}

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=False).ids

    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """``(log-probability of the continuation, whether greedy decoding would produce it)``
        per request, in the order given."""
        token_lists = [self._input_tokens(ctx, cont) for _, ctx, cont in requests]
        # Longest first, as lm-eval does: the first batch is the largest one.
        order = sorted(range(len(requests)), key=lambda i: -len(token_lists[i][0]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood") as progress:
            for batch in self._batches(order, token_lists):
                for index, result in zip(
                    batch, self._score([token_lists[i] for i in batch]), strict=True
                ):
                    results[index] = result
                progress.update(len(batch))
        return results

    def _input_tokens(
        self, context_ids: list[int], continuation_ids: list[int]
    ) -> tuple[list[int], int]:
        """The tokens a request reads (context + continuation, cut from the left to
        ``max_length + 1``) and how many of them, at the end, are scored."""
        if not continuation_ids or len(continuation_ids) > self.max_length:
            raise ValueError(
                f"a continuation must have 1 to {self.max_length} tokens; "
                f"got {len(continuation_ids)}"
            )
        return (context_ids + continuation_ids)[-(self.max_length + 1) :], len(continuation_ids)

    def _batches(
        self, order: list[int], token_lists: list[tuple[list[int], int]]
    ) -> list[list[int]]:
        """Consecutive requests of ``order`` (longest first) grouped into forward passes."""
        batches: list[list[int]] = []
        for index in order:
            padded_length = len(token_lists[batches[-1][0]][0]) - 1 if batches else 0
            if (
                batches
                and len(batches[-1]) < self.batch_size
                and (len(batches[-1]) + 1) * padded_length <= self.max_batch_tokens
            ):
                batches[-1].append(index)
            else:
                batches.append([index])
        return batches

    @torch.inference_mode()
    def _score(self, token_lists: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """One forward pass over right-padded rows; the scored tokens of every row at once."""
        lengths = torch.tensor([len(tokens) for tokens, _ in token_lists])
        n_scored = torch.tensor([n for _, n in token_lists])
        width = int(lengths.max())
        inputs = torch.tensor(
            [tokens + [self.eot_token_id] * (width - len(tokens)) for tokens, _ in token_lists]
        )
        # Position t predicts token t + 1: the last n_scored predictions of each row are scored.
        positions = torch.arange(width - 1)
        scored = (positions >= (lengths - 1 - n_scored)[:, None]) & (
            positions < (lengths - 1)[:, None]
        )
        inputs = inputs.to(self._device)
        scored = scored.to(self._device)
        logits = self.model(inputs[:, :-1]).float()  # (B, T, vocab)
        targets = inputs[:, 1:, None]
        # Greedy when the target's logit is the largest (amax reads the logits 5x faster than
        # argmax on a CPU; a tie, which argmax would break by index, counts as greedy).
        misses = logits.gather(-1, targets)[..., 0] < logits.amax(-1)
        logprobs = logits.log_softmax(-1).gather(-1, targets)[..., 0].double()  # (B, T)
        totals = logprobs.where(scored, 0.0).sum(-1)
        wrong = (misses & scored).sum(-1)
        return [(float(t), not w) for t, w in zip(totals.tolist(), wrong.tolist(), strict=True)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-probability of each whole text read after the end-of-text token, in windows of
        ``max_length`` tokens where it is longer (lm-eval's rolling windows)."""
        windows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append(((text, ""), context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(
            owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm), strict=True
        ):
            totals[owner] += logprob
        return totals

    @torch.inference_mode()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until one of its ``until`` strings, the
        end-of-text token or ``max_gen_toks`` tokens (lm-eval's default 256), cut before the
        stop string. Requests with the same arguments share a left-padded batch of
        ``batch_size`` (``LanguageModel.generate`` with a list of prompts), so each gives what
        it gives alone."""
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for index, request in enumerate(requests):
            _, gen_kwargs = request.args
            until, max_gen_toks = _generation_arguments(gen_kwargs)
            groups.setdefault((until, max_gen_toks), []).append(index)
        results = [""] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until") as progress:
            for (until, max_gen_toks), indices in groups.items():
                keep = max(self.max_length - max_gen_toks, 1)
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    prompts = [
                        (self.tok_encode(requests[i].args[0]) or [self.eot_token_id])[-keep:]
                        for i in batch
                    ]
                    outputs = self.model.generate(
                        prompts,
                        max_gen_toks,
                        eos_id=self.eot_token_id,
                        pad_id=self.eot_token_id,
                    )
                    for i, prompt, output in zip(batch, prompts, outputs, strict=True):
                        new = output[len(prompt) :].tolist()
                        if self.eot_token_id in new:
                            new = new[: new.index(self.eot_token_id)]
                        text = self.tokenizer.decode(new)
                        for stop in until:
                            text = text.split(stop)[0] if stop else text
                        results[i] = text
                    progress.update(len(batch))
        return results


def _generation_arguments(gen_kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """``(until strings, max_gen_toks)`` of a generate_until request; greedy decoding only."""
    gen_kwargs = dict(gen_kwargs)
    until = gen_kwargs.pop("until", None) or ()
    until = (until,) if isinstance(until, str) else tuple(until)
    max_gen_toks = _positive_int("max_gen_toks", gen_kwargs.pop("max_gen_toks", 256))
    do_sample = gen_kwargs.pop("do_sample", False)
    temperature = gen_kwargs.pop("temperature", 0.0)
    if do_sample or temperature:
        raise ValueError(
            f"SelropeLM generates greedily; got do_sample={do_sample}, temperature={temperature}"
        )
    if gen_kwargs:
        raise ValueError(f"SelropeLM.generate_until does not take {sorted(gen_kwargs)}")
    return until, max_gen_toks


def _positive_int(name: str, value: int | str) -> int:
    """lm-eval passes model arguments from its command line as strings."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value
