"""Comparators (kept apart from runners, as in Polygraphy): outputs of two runners -> parity metrics.

A NaN or Inf never passes: it makes the element's error infinite, the sample's cosine NaN and its top-1
no class at all, and `failures` names it (in the build, or in the reference as a reference problem).

int8 is judged on decisive samples: those whose reference top-1 margin exceeds what float noise alone
can move (verify/noise.py): each logit may move by d, the larger of the spread between float-equivalent
executions of the reference (`noise`) and one output quantization step, so a margin above 2d cannot flip
unless the build is wrong.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Tolerance:
    max_abs: float  # largest allowed |candidate - reference| on any output element
    min_cosine: float  # smallest allowed per-sample cosine similarity
    min_agreement: float  # smallest allowed top-1 agreement on all samples, percent
    min_decisive: float = 0.0  # smallest allowed top-1 agreement on the decisive samples, percent
    min_decisive_share: float = 0.0  # decisive samples needed, percent of all (fewer judge nothing)
    max_top1_delta: float = math.inf  # largest allowed |top-1 of build - top-1 of reference|, points


# fp32 tight; fp16 looser; int8 against its fake-quant reference: every decisive sample agrees and the
# dataset top-1 moves by at most 0.1 points (raw agreement sits at the noise floor: reported, not judged)
TOLERANCES = {"fp32": Tolerance(1e-4, 0.99999, 100.0), "fp16": Tolerance(5e-2, 0.999, 99.0),
              "int8": Tolerance(math.inf, 0.98, 0.0, min_decisive=100.0, min_decisive_share=50.0,
                                max_top1_delta=0.1)}
# an fp16 build with a float16 twin (reference.half_graph: a TVM build computing in float16) is judged like
# int8, on the decisive samples: float16 arithmetic moves large logits by more than any fixed max abs
DECISIVE_FP16 = Tolerance(math.inf, 0.999, 0.0, min_decisive=100.0, min_decisive_share=50.0)


def tolerance(precision: str, *, decisive: bool = False, **overrides) -> Tolerance:
    """The default tolerance of a precision (`decisive`: fp16 judged on decisive samples), with overrides."""
    base = asdict(DECISIVE_FP16 if decisive and precision == "fp16" else TOLERANCES[precision])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Tolerance(**base)


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def nonfinite(a: np.ndarray) -> dict | None:
    """Where an output holds NaN/Inf: count, samples, the first sample and its first bad value; None if finite."""
    rows = _rows(a)
    bad = ~np.isfinite(rows)
    if not bad.any():
        return None
    per_sample = bad.any(1)
    first = int(per_sample.argmax())
    return {"count": int(bad.sum()), "samples": int(per_sample.sum()), "first_sample": first,
            "first_value": str(rows[first][bad[first]][0])}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity; NaN for a sample with a non-finite value on either side."""
    a, b = _rows(a), _rows(b)
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b = np.where(ok[:, None], a, 0.0), np.where(ok[:, None], b, 0.0)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 1.0)
    return np.where(ok, cos, np.nan)


def predicted(logits: np.ndarray) -> np.ndarray:
    """The top-1 class of each sample; -1 (no class) for a sample with a non-finite logit."""
    rows = _rows(logits)
    ok = np.isfinite(rows).all(1)
    return np.where(ok, np.where(ok[:, None], rows, 0.0).argmax(1), -1)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of samples whose largest logit is the label (nan for no samples; non-finite rows are wrong)."""
    return 100.0 * float((predicted(logits) == labels).mean()) if len(labels) else float("nan")


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of samples on which two outputs pick the same class (never on a non-finite sample)."""
    pa, pb = predicted(a), predicted(b)
    return 100.0 * float(((pa == pb) & (pa >= 0)).mean())


def margins(logits: np.ndarray) -> np.ndarray:
    """Per sample: largest logit minus the second largest (NaN where a logit is non-finite)."""
    rows = _rows(logits)
    if rows.shape[1] < 2:
        return np.full(len(rows), np.nan)
    top2 = -np.sort(-rows, axis=1)[:, :2]
    return np.where(np.isfinite(rows).all(1), top2[:, 0] - top2[:, 1], np.nan)


def decisive(got: np.ndarray, want: np.ndarray, noise: list[np.ndarray], step: float = 0.0) -> dict:
    """Top-1 agreement on the samples whose reference margin is above 2 x max(measured spread, step);
    `noise`: float-equivalent executions of the reference, the spread is their largest difference from it."""
    spread = np.stack([np.abs(_rows(n) - _rows(want)) for n in noise])
    spread_max = float(spread.max()) if np.isfinite(spread).all() else math.inf
    bound = 2 * max(spread_max, step)
    chosen = margins(want) > bound  # NaN margins compare False
    agree = (predicted(got) == predicted(want)) & chosen
    n, wrong = int(chosen.sum()), np.flatnonzero(chosen & ~agree)
    return {"noise_spread": spread_max, "output_step": step, "margin_bound": bound, "decisive_samples": n,
            "decisive_share": 100.0 * n / len(want) if len(want) else float("nan"),
            "decisive_agreement": 100.0 * int(agree.sum()) / n if n else float("nan"),
            "decisive_disagreements": len(wrong), "first_decisive_disagreement": int(wrong[0]) if len(wrong) else None}


def compare_output(got: np.ndarray, want: np.ndarray, labels: np.ndarray | None = None, *,
                   noise: list[np.ndarray] | None = None, step: float = 0.0) -> dict:
    """Parity metrics for one output of N samples (first axis = sample); `noise`: float-equivalent
    executions of the reference and `step` one output quantization step, for the decisive agreement of a
    classifier output."""
    if got.shape != want.shape:
        return {"error": f"shape {list(got.shape)} != reference {list(want.shape)}"}
    g, w = _rows(got), _rows(want)
    both = np.isfinite(g) & np.isfinite(w)
    diff = np.where(both, np.abs(np.where(both, g - w, 0.0)), np.inf)  # a NaN/Inf on either side: infinite error
    cos = cosine(got, want)
    m = {"samples": len(got), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
         "max_rel": float((diff / (np.abs(np.where(both, w, 0.0)) + 1e-6)).max()),
         "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "worst_sample": int(diff.max(1).argmax())}
    for side, a in (("candidate", got), ("reference", want)):
        if nonfinite(a):
            m[f"nonfinite_{side}"] = nonfinite(a)
    if got.ndim == 2:
        agree = (predicted(got) == predicted(want)) & (predicted(got) >= 0)
        m["top1_agreement"] = 100.0 * float(agree.mean())
        m["disagreements"] = int((~agree).sum())
        if labels is not None:
            m["top1_candidate"], m["top1_reference"] = top1(got, labels), top1(want, labels)
        if noise and all(n.shape == want.shape for n in noise):
            m.update(decisive(got, want, noise, step))
    return m


def _nonfinite_reason(nf: dict, whose: str) -> str:
    return (f"{whose} holds {nf['count']} non-finite value(s) (NaN/Inf) in {nf['samples']} sample(s), first in "
            f"sample {nf['first_sample']} ({nf['first_value']})")


def failures(metrics: dict, tol: Tolerance) -> list[str]:
    """Human-readable reasons this output fails `tol` (empty when it passes). NaN never passes a bar."""
    if "error" in metrics:
        return [metrics["error"]]
    out = []
    if metrics.get("nonfinite_reference"):
        out.append(_nonfinite_reason(metrics["nonfinite_reference"], "the reference output") +
                   ": a reference problem, the build cannot be judged against it")
    if metrics.get("nonfinite_candidate"):
        out.append(_nonfinite_reason(metrics["nonfinite_candidate"], "the build's output"))
    if out:
        return out
    if not metrics["max_abs"] <= tol.max_abs:
        out.append(f"max abs error {metrics['max_abs']:.3g} > {tol.max_abs:g}")
    if not metrics["min_cosine"] >= tol.min_cosine:
        out.append(f"cosine {metrics['min_cosine']:.6f} < {tol.min_cosine}")
    if not metrics.get("top1_agreement", 100.0) >= tol.min_agreement:
        out.append(f"top-1 agreement {metrics['top1_agreement']:.2f}% < {tol.min_agreement}%")
    return out + _int8_failures(metrics, tol)


def _int8_failures(metrics: dict, tol: Tolerance) -> list[str]:
    out = []
    if "decisive_samples" in metrics:
        if not metrics["decisive_share"] >= tol.min_decisive_share:
            out.append(f"only {metrics['decisive_share']:.1f}% of samples are decisive (reference margin > "
                       f"{metrics['margin_bound']:.3g}), fewer than {tol.min_decisive_share:g}%: the reference's "
                       "float noise is too large to judge the build")
        elif not metrics["decisive_agreement"] >= tol.min_decisive:
            out.append(f"decisive top-1 agreement {metrics['decisive_agreement']:.2f}% < {tol.min_decisive:g}% "
                       f"({metrics['decisive_disagreements']} of {metrics['decisive_samples']} samples with a "
                       f"margin > {metrics['margin_bound']:.3g} disagree, first: sample "
                       f"{metrics['first_decisive_disagreement']})")
    delta = abs(metrics.get("top1_candidate", 0.0) - metrics.get("top1_reference", 0.0))
    if not delta <= tol.max_top1_delta:
        out.append(f"top-1 {metrics['top1_candidate']:.2f}% vs reference {metrics['top1_reference']:.2f}%: "
                   f"{delta:.2f} points apart > {tol.max_top1_delta:g}")
    return out
