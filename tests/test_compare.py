"""The comparators: a NaN or Inf never passes, and int8 is judged on decisive samples."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecnn.verify import compare, noise


def logits(n=64, classes=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32) * 3


def test_nan_in_the_candidate_fails_with_count_and_first_sample():
    want = logits()
    got = want.copy()
    got[5, 2] = got[5, 7] = np.nan
    got[9, 0] = np.inf
    m = compare.compare_output(got, want, labels=want.argmax(1))
    assert m["max_abs"] == np.inf and np.isnan(m["min_cosine"]) and m["worst_sample"] == 5
    assert m["nonfinite_candidate"] == {"count": 3, "samples": 2, "first_sample": 5, "first_value": "nan"}
    assert m["disagreements"] == 2 and m["top1_candidate"] == pytest.approx(100 * 62 / 64)  # no class for a NaN row
    for tol in compare.TOLERANCES.values():  # int8's max_abs is inf: inf <= inf must not pass a NaN
        reasons = compare.failures(m, tol)
        assert reasons == ["the build's output holds 3 non-finite value(s) (NaN/Inf) in 2 sample(s), first in "
                           "sample 5 (nan)"]


def test_nan_at_the_same_place_in_both_fails():
    want = logits()
    want[3, 1] = np.nan
    got = want.copy()
    reasons = compare.failures(compare.compare_output(got, want), compare.tolerance("fp32"))
    assert len(reasons) == 2 and "a reference problem" in reasons[0] and "build's output holds 1" in reasons[1]


def test_nan_in_the_reference_is_a_reference_problem():
    want = logits()
    want[4, 0] = -np.inf
    m = compare.compare_output(np.ones_like(want), want)
    assert m["nonfinite_reference"]["first_sample"] == 4 and "nonfinite_candidate" not in m
    assert compare.failures(m, compare.tolerance("int8")) == [
        "the reference output holds 1 non-finite value(s) (NaN/Inf) in 1 sample(s), first in sample 4 (-inf): "
        "a reference problem, the build cannot be judged against it"]


def test_nan_never_wins_top1():
    a = np.array([[0.0, np.nan, 1.0], [2.0, 1.0, 0.0]])
    assert compare.predicted(a).tolist() == [-1, 0]
    assert compare.top1(a, np.array([1, 0])) == 50.0 and compare.top1_agreement(a, a) == 50.0
    assert np.isnan(compare.cosine(a, a)[0]) and compare.cosine(a, a)[1] == pytest.approx(1.0)


def noisy(want, scale, seed):
    return want + np.random.default_rng(seed).uniform(-scale, scale, want.shape).astype(np.float32)


def test_decisive_agreement_passes_on_noise_and_fails_on_a_real_error():
    want = logits(n=2000)
    twin, got = noisy(want, 0.005, 1), noisy(want, 0.005, 2)  # float noise of the same size on both
    labels = noisy(want, 2.0, 3).argmax(1)  # near-ties are hard: the label is either class
    m = compare.compare_output(got, want, labels, noise=[twin])
    tol = compare.tolerance("int8")
    assert m["disagreements"] > 0 and m["top1_agreement"] < 100  # near-ties flip on noise alone
    assert m["noise_spread"] == pytest.approx(0.005, rel=0.01) and m["margin_bound"] == 2 * m["noise_spread"]
    assert m["decisive_agreement"] == 100.0 and m["decisive_share"] > 90
    assert compare.failures(m, tol) == []
    wrong = got.copy()
    wrong[:, 3] += 1.0  # an error a decision can see, larger than the noise
    bad = compare.compare_output(wrong, want, labels, noise=[twin])
    assert bad["decisive_agreement"] < 100 and bad["first_decisive_disagreement"] is not None
    assert any(r.startswith("decisive top-1 agreement") for r in compare.failures(bad, tol))


def test_fp16_with_a_float16_twin_is_judged_on_decisive_samples():
    """A build computing in float16 (logits off by more than the fixed 5e-2, near-ties flipped) passes
    on the decisive samples its twin's spread defines; the plain fp16 tolerance would fail it; a real error
    fails both."""
    want = 20 * logits(n=2000)
    twin, got = noisy(want, 0.3, 1), noisy(want, 0.3, 2)
    m = compare.compare_output(got, want, noise=[twin])
    assert m["top1_agreement"] < 100 and m["max_abs"] > 5e-2
    assert compare.failures(m, compare.tolerance("fp16"))  # max abs and raw agreement
    assert compare.failures(m, compare.tolerance("fp16", decisive=True)) == []
    wrong = got.copy()
    wrong[:, 3] += 20.0
    bad = compare.failures(compare.compare_output(wrong, want, noise=[twin]), compare.tolerance("fp16", decisive=True))
    assert any(r.startswith("decisive top-1 agreement") for r in bad)
    assert compare.tolerance("fp32", decisive=True) == compare.tolerance("fp32")


def test_decisive_bound_takes_the_output_step_when_the_twin_is_identical():
    want = logits(n=200)
    m = compare.compare_output(want, want, noise=[want.copy()], step=0.25)
    assert m["noise_spread"] == 0 and m["margin_bound"] == 0.5
    assert m["decisive_samples"] == int((compare.margins(want) > 0.5).sum())


def test_too_few_decisive_samples_judge_nothing():
    want = logits(n=100)
    m = compare.compare_output(want, want, noise=[want + 100])
    assert m["decisive_samples"] == 0
    assert "fewer than 50%" in compare.failures(m, compare.tolerance("int8"))[0]


def test_top1_delta_bound():
    want = logits(n=1000)
    labels = want.argmax(1)
    got = want.copy()
    got[:2] = got[:2][:, ::-1]  # two samples change class: 0.2 points
    m = compare.compare_output(got, want, labels, noise=[want])
    assert abs(m["top1_candidate"] - m["top1_reference"]) == pytest.approx(0.2)
    assert any("points apart > 0.1" in r for r in compare.failures(m, compare.tolerance("int8")))


def qdq_classifier(x_scale, weight, w_scale, out_qdq=False):
    """input -> Q/DQ -> Gemm(DQ(int8 weight)) [-> Q/DQ] -> logits."""
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(weight.astype(np.int8), "w"),
             numpy_helper.from_array(np.array(w_scale, np.float32), "ws")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "z"], ["wd"]),
             helper.make_node("Gemm", ["xd", "wd"], ["g" if out_qdq else "logits"], transB=1)]
    if out_qdq:
        inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "os"))
        nodes += [helper.make_node("QuantizeLinear", ["g", "os", "z"], ["gq"]),
                  helper.make_node("DequantizeLinear", ["gq", "os", "z"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_output_step_of_a_quantized_classifier():
    w = np.array([[10, -20, 5, 1], [3, 3, 3, 3], [0, 0, -40, 0]])
    assert noise.output_step(qdq_classifier(0.1, w, 0.01), "logits") == pytest.approx(0.1 * 40 * 0.01)
    assert noise.output_step(qdq_classifier(0.1, w, 0.01, out_qdq=True), "logits") == 0.5
    onnx.checker.check_model(qdq_classifier(0.1, w, 0.01, out_qdq=True))
