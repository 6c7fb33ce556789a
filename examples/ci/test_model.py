"""The model an application ships, held to its budgets in the application's own CI (edgecnn's pytest plugin):

    pip install edgecnn          # the plugin comes with it: --edgecnn-build and the edgecnn_build fixture
    pytest tests/test_model.py --edgecnn-build models/classifier.edgecnn.tar.gz   # or a build directory
"""

from edgecnn.testing import assert_accuracy, assert_latency, assert_parity


def test_outputs_match_the_trained_model(edgecnn_build):
    assert_parity(edgecnn_build, atol=1e-4, min_agreement=99.9)


def test_fast_enough(edgecnn_build):
    assert_latency(edgecnn_build, p99_ms=5.0, max_ratio={"onnxruntime": 1.5}, runs=200)


def test_accurate_enough(edgecnn_build):
    assert_accuracy(edgecnn_build, min_top1=90.0)
