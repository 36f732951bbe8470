"""Set-up shared by every test process (each pytest-xdist worker loads it before collecting)."""

import os

import torch

if not torch.cuda.is_available():
    # Without a GPU, Triton kernels run only in Triton's CPU interpreter, which must be switched on
    # before anything imports triton.language (torch._dynamo does): tests/rotary/test_triton_*.
    os.environ.setdefault("TRITON_INTERPRET", "1")
