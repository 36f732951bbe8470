"""Evaluation of trained language models: perplexity against context length, and its report."""

from selrope.evaluation.perplexity import evaluate_length, evaluate_lengths, scored_target_count
from selrope.evaluation.report import EvaluatedRun, write_report
from selrope.evaluation.runs import load_model, model_directory, training_length

__all__ = [
    "EvaluatedRun",
    "evaluate_length",
    "evaluate_lengths",
    "load_model",
    "model_directory",
    "scored_target_count",
    "training_length",
    "write_report",
]
