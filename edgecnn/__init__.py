"""edgecnn: train, export, quantize, compile, verify, benchmark and bundle small CNNs for edge devices."""

from edgecnn.core.errors import EdgecnnError

__version__ = "0.1.0"
__all__ = ["EdgecnnError", "__version__"]
