"""selrope.ops: sequence-mixing maths, pure functions on tensors in layout ``(B, T, H, D)``.

Each recurrent op comes as a float64-safe loop reference (``recurrent_*``), a fast chunked form
(``chunk_*``) and a one-token form (``*_step``, per-token tensors ``(B, H, D)``), with the same
argument order. Softmax attention and forgetting attention (FoX) have an SDPA form, a float64
reference and a KV-cache form.
Every sequence op takes ``segment_ids`` ``(B, T)`` for packed documents (``ops.segments``).
"""

from selrope.ops.alibi import (
    alibi_attention,
    alibi_attention_with_cache,
    alibi_bias,
    alibi_slopes,
    reference_alibi_attention,
)
from selrope.ops.attention import attention_with_cache, causal_attention, reference_attention
from selrope.ops.cope import (
    contextual_positions,
    cope_attention,
    cope_attention_with_cache,
    cope_forgetting_attention,
    cope_forgetting_attention_with_cache,
    reference_cope_attention,
)
from selrope.ops.forgetting_attention import (
    cumulative_log_forget,
    forgetting_attention,
    forgetting_attention_with_cache,
    reference_forgetting_attention,
)
from selrope.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_step,
    recurrent_gated_delta_rule,
)
from selrope.ops.gla import chunk_gla, gla_step, recurrent_gla
from selrope.ops.path_attention import (
    PathAttentionCache,
    path_attention,
    path_attention_with_cache,
    reference_path_attention,
)
from selrope.ops.segments import (
    check_segment_ids,
    document_index,
    document_resets,
    positions_in_segment,
    segment_ids_from_attention_mask,
    segment_ids_from_cu_seqlens,
    segment_starts,
)
from selrope.ops.short_conv import ShortConvolution, causal_depthwise_conv

__all__ = [
    "PathAttentionCache",
    "ShortConvolution",
    "alibi_attention",
    "alibi_attention_with_cache",
    "alibi_bias",
    "alibi_slopes",
    "attention_with_cache",
    "causal_attention",
    "causal_depthwise_conv",
    "check_segment_ids",
    "chunk_gated_delta_rule",
    "chunk_gla",
    "contextual_positions",
    "cope_attention",
    "cope_attention_with_cache",
    "cope_forgetting_attention",
    "cope_forgetting_attention_with_cache",
    "cumulative_log_forget",
    "document_index",
    "document_resets",
    "forgetting_attention",
    "forgetting_attention_with_cache",
    "gated_delta_rule_step",
    "gla_step",
    "path_attention",
    "path_attention_with_cache",
    "positions_in_segment",
    "recurrent_gated_delta_rule",
    "recurrent_gla",
    "reference_alibi_attention",
    "reference_attention",
    "reference_cope_attention",
    "reference_forgetting_attention",
    "reference_path_attention",
    "segment_ids_from_attention_mask",
    "segment_ids_from_cu_seqlens",
    "segment_starts",
]
