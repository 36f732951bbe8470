"""Theory demos: softmax as implicit rotation, spectral leakage and the decay window."""
