"""Theory demos (``selrope theory``) and figures (``selrope analyze``): softmax as implicit
rotation, spectral leakage and the decay window, and a look inside trained parity models (the
complex eigenvalues of GLA + Selective RoPE, the learned angle increments)."""
