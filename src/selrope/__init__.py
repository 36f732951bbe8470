"""selrope: input-dependent rotary position embeddings for attention and linear recurrences."""

__version__ = "0.1.0"
