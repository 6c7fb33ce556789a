"""The one float tolerance: an absolute error allowed per unit of the reference's largest magnitude (at least
1), because float32 rounding grows with the values (a user's module with logits in the hundreds)."""

import numpy as np


def max_abs(got: np.ndarray, want: np.ndarray) -> float:
    """Largest |got - want| in float64 (inf when the shapes differ, 0 for empty tensors)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0


def magnitude(*wants: np.ndarray) -> float:
    """max(1, the largest |value| of the references)."""
    return max([1.0, *(float(np.abs(w).max()) for w in wants if np.asarray(w).size)])


def within(err: float, atol: float, scale: float, noise: float = 0.0) -> bool:
    """err <= atol x scale (+ twice a measured float noise); a NaN error is not within."""
    return err <= atol * scale + 2 * noise


def exceeds(err: float, atol: float, scale: float) -> bool:
    """err > atol x scale; a NaN error does not exceed (where NaN matters, the caller checks it first)."""
    return err > atol * scale
