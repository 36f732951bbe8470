"""selrope.evaluation.lm_eval_model.SelropeLM: every request's log-likelihood is the model's own
summed log-probability, whatever the batching, for every mixer; greedy flags, rolling
log-likelihoods and lm-eval's registry."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

from byte_models import EOS_ID, greedy_ids, own_logprob, save_byte_run  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402

from selrope.evaluation.lm_eval_model import SelropeLM  # noqa: E402
from selrope.models import LanguageModel  # noqa: E402
from selrope.rotary import SELECTIVE_LM_RECIPE  # noqa: E402

# Empty contexts (read after EOS), a context ending in a space (lm-eval moves it to the
# continuation), one-byte continuations and rows of many lengths, so batches get padded.
PAIRS = [
    ("", " The cats sleep."),
    ("", " The cats sleeps."),
    ("Question: why?\nAnswer:", " because"),
    ("Question: how do I open a jar?\nAnswer: ", "twist the lid"),
    ("ab", "c"),
    ("a much longer context that runs on for a while before", " the end"),
    ("x", " y z"),
]
MODELS = {
    "attention-rope": ("attention", {"type": "rope"}),
    "gla-selective": ("gla", SELECTIVE_LM_RECIPE),
    "gdn-nope": ("gdn", {"type": "nope"}),
    "attention-learned": ("attention", {"type": "nope"}),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request, tmp_path_factory):
    mixer, rotary = MODELS[request.param]
    overrides = {"absolute_position": "learned"} if request.param.endswith("learned") else {}
    return save_byte_run(tmp_path_factory.mktemp(request.param), mixer, rotary, **overrides)


def _moved_space(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval scores a context's trailing spaces as part of the continuation."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def _requests(pairs):
    return [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]


def test_loglikelihood_is_the_models_own_log_probability(run) -> None:
    lm = SelropeLM(run, batch_size=4, max_batch_tokens=64)
    model = LanguageModel.from_pretrained(run / "model").eval()
    results = lm.loglikelihood(_requests(PAIRS), disable_tqdm=True)
    for pair, (logprob, _) in zip(PAIRS, results, strict=True):
        assert logprob == pytest.approx(own_logprob(model, *_moved_space(*pair)), abs=1e-4)
    assert lm.eot_token_id == lm.prefix_token_id == EOS_ID


@pytest.mark.parametrize(
    ("batch_size", "max_batch_tokens"), [(1, 768), (2, 768), (64, 20), (64, 768)]
)
def test_results_do_not_depend_on_the_batching(run, batch_size, max_batch_tokens) -> None:
    # (64, 20): most rows are longer than the token budget and go alone; (64, 768): one batch.
    reference = SelropeLM(run, batch_size=3, max_batch_tokens=768)
    lm = SelropeLM(run, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    expected = reference.loglikelihood(_requests(PAIRS), disable_tqdm=True)
    results = lm.loglikelihood(_requests(PAIRS), disable_tqdm=True)
    assert [greedy for _, greedy in results] == [greedy for _, greedy in expected]
    assert [logprob for logprob, _ in results] == pytest.approx(
        [logprob for logprob, _ in expected], abs=1e-5
    )


def test_greedy_flag_is_true_exactly_for_the_greedy_continuation(run) -> None:
    lm = SelropeLM(run, batch_size=8)
    model = LanguageModel.from_pretrained(run / "model").eval()
    contexts = [[EOS_ID], list(b"The cat"), list(b"Question: why?\nAnswer:")]
    requests = []
    for context in contexts:
        greedy = greedy_ids(model, context, 5)
        other = greedy[:3] + [(greedy[3] + 1) % 257] + greedy[4:]
        requests += [(("", ""), context, greedy), (("", ""), context, other)]
    flags = [greedy for _, greedy in lm._loglikelihood_tokens(requests, disable_tqdm=True)]
    assert flags == [True, False] * len(contexts)


def test_rolling_loglikelihood_is_the_whole_texts_log_probability(run) -> None:
    lm = SelropeLM(run)
    model = LanguageModel.from_pretrained(run / "model").eval()
    texts = ["The cats sleep.", "a second, longer text with more words in it"]
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=i)
        for i, text in enumerate(texts)
    ]
    results = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    for text, logprob in zip(texts, results, strict=True):
        assert logprob == pytest.approx(own_logprob(model, "", text), abs=1e-4)


def test_long_requests_keep_their_last_max_length_tokens(tmp_path) -> None:
    run = save_byte_run(tmp_path, "attention", absolute_position="learned", max_positions=16)
    lm = SelropeLM(run)
    model = LanguageModel.from_pretrained(run / "model").eval()
    context, continuation = "a context far longer than sixteen bytes", " end"
    ((logprob, _),) = lm.loglikelihood(_requests([(context, continuation)]), disable_tqdm=True)
    # 17 bytes read: the model sees the last 16 as input and predicts the last 4.
    kept = (context + continuation).encode()[-17:]
    assert logprob == pytest.approx(
        own_logprob(model, kept[:-4].decode(), kept[-4:].decode()), abs=1e-4
    )


def test_registered_with_lm_eval_and_built_from_its_argument_string(tmp_path) -> None:
    from lm_eval.api.registry import get_model

    run = save_byte_run(tmp_path)
    assert get_model("selrope") is SelropeLM
    lm = SelropeLM.create_from_arg_string(
        f"pretrained={run},max_batch_tokens=32", {"batch_size": "4", "device": "cpu"}
    )
    assert (lm.batch_size, lm.max_batch_tokens, lm.device) == (4, 32, torch.device("cpu"))


def test_user_errors(tmp_path) -> None:
    run = save_byte_run(tmp_path)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 'auto'"):
        SelropeLM(run, batch_size="auto")
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive integer"):
        SelropeLM(run, max_batch_tokens=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            SelropeLM(run, device="cuda:0")
    (run / "model" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="holds no tokenizer.json"):
        SelropeLM(run)


GENERATIONS = [
    ("Question: why?\nAnswer:", {"until": ["\n"], "max_gen_toks": 12}),
    ("ab", {"until": ["\n"], "max_gen_toks": 12}),
    ("", {"until": ["\n"], "max_gen_toks": 12}),
    ("a much longer context that runs on for a while before", {"until": "e", "max_gen_toks": 7}),
    ("x", {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}),
]


def _generation_requests():
    return [
        Instance(request_type="generate_until", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(GENERATIONS)
    ]


def _greedy_text(model: LanguageModel, context: str, gen_kwargs: dict) -> str:
    until = gen_kwargs["until"]
    ids = greedy_ids(model, list(context.encode()) or [EOS_ID], gen_kwargs["max_gen_toks"])
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    text = bytes(ids).decode("utf-8", errors="replace")
    for stop in [until] if isinstance(until, str) else until:
        text = text.split(stop)[0]
    return text


@pytest.mark.parametrize("batch_size", [1, 8])
def test_generate_until_is_greedy_decoding_whatever_the_batch(run, batch_size) -> None:
    lm = SelropeLM(run, batch_size=batch_size)
    model = LanguageModel.from_pretrained(run / "model").eval()
    results = lm.generate_until(_generation_requests(), disable_tqdm=True)
    expected = [_greedy_text(model, *request) for request in GENERATIONS]
    assert results == expected
    assert any(results)  # not all empty (the test can fail)
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until(_requests([("ab", {"do_sample": True})]))
