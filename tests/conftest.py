"""Set-up shared by every test process (each pytest-xdist worker loads it before collecting)."""

import os

import torch

if not torch.cuda.is_available():
    # Without a GPU, Triton kernels run only in Triton's CPU interpreter, which must be switched on
    # before anything imports triton.language (torch._dynamo does): tests/rotary/test_triton_*.
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # Triton's float32 dot products default to TF32 on recent GPUs (about 1e-3 relative error):
    # the kernels under test (fla's, selrope's) are compared with float64 references in IEEE
    # float32.
    os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")
