"""edgecnn: train, export, quantize, compile, verify, benchmark and bundle small CNNs for edge devices."""

import os

# PyTorch's CPU threads are libgomp's, which by default spin at every barrier. LeNet-5 training runs a few
# hundred tiny parallel regions per batch: with one other job on the cores, the spinning thread holds the core
# its partner needs, and 2-thread training ran 9-10x slower than with PASSIVE (12,800 images: 27-31 s vs 2.9 s
# at load 14 on 2 cores; 1 thread: 2.9-3.6 s). Set before torch loads libgomp; a value of the user's stands.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgecnn.core.errors import EdgecnnError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EdgecnnError", "__version__"]
