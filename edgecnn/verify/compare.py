"""Comparators (kept apart from runners, as in Polygraphy): outputs of two runners -> parity metrics."""

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Tolerance:
    max_abs: float  # largest allowed |candidate - reference| on any output element
    min_cosine: float  # smallest allowed per-sample cosine similarity
    min_agreement: float  # smallest allowed top-1 agreement, percent


# fp32 tight; fp16 looser; int8 against its fake-quant reference (the same Q/DQ graph run op by op)
TOLERANCES = {"fp32": Tolerance(1e-4, 0.99999, 100.0), "fp16": Tolerance(5e-2, 0.999, 99.0),
              "int8": Tolerance(math.inf, 0.98, 99.5)}


def tolerance(precision: str, **overrides) -> Tolerance:
    base = asdict(TOLERANCES[precision])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Tolerance(**base)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 1.0)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of samples whose largest logit is the label (nan for no samples)."""
    return 100.0 * float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of samples on which two outputs pick the same class."""
    return 100.0 * float((a.argmax(1) == b.argmax(1)).mean())


def compare_output(got: np.ndarray, want: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Parity metrics for one output of N samples (first axis = sample)."""
    if got.shape != want.shape:
        return {"error": f"shape {list(got.shape)} != reference {list(want.shape)}"}
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    per_sample = diff.reshape(len(diff), -1).max(1)
    cos = cosine(got, want)
    m = {"samples": len(got), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
         "max_rel": float((diff / (np.abs(want) + 1e-6)).max()),
         "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
         "worst_sample": int(per_sample.argmax())}
    if got.ndim == 2:
        agree = got.argmax(1) == want.argmax(1)
        m["top1_agreement"] = 100.0 * float(agree.mean())
        m["disagreements"] = int((~agree).sum())
        if labels is not None:
            m["top1_candidate"], m["top1_reference"] = top1(got, labels), top1(want, labels)
    return m


def failures(metrics: dict, tol: Tolerance) -> list[str]:
    """Human-readable reasons this output fails `tol` (empty when it passes)."""
    if "error" in metrics:
        return [metrics["error"]]
    out = []
    if metrics["max_abs"] > tol.max_abs:
        out.append(f"max abs error {metrics['max_abs']:.3g} > {tol.max_abs:g}")
    if metrics["min_cosine"] < tol.min_cosine:
        out.append(f"cosine {metrics['min_cosine']:.6f} < {tol.min_cosine}")
    if metrics.get("top1_agreement", 100.0) < tol.min_agreement:
        out.append(f"top-1 agreement {metrics['top1_agreement']:.2f}% < {tol.min_agreement}%")
    return out
