"""Facts with one home: input checks, documented config fields, the compute-dtype rule.

Nothing here imports anything else from selrope, so every layer of the library may use it.
"""

from selrope.common.checks import (
    check_bool,
    check_choice,
    check_even_head_dim,
    check_heads_divide,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_range,
    is_finite_number,
    is_int,
)
from selrope.common.dtypes import compute_dtype
from selrope.common.fields import field_help, is_required, setting

__all__ = [
    "check_bool",
    "check_choice",
    "check_even_head_dim",
    "check_heads_divide",
    "check_non_negative_int",
    "check_positive_float",
    "check_positive_int",
    "check_range",
    "compute_dtype",
    "field_help",
    "is_finite_number",
    "is_int",
    "is_required",
    "setting",
]
