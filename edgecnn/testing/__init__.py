"""Budgets for an application's CI: the parity, latency and accuracy of an edgecnn build or bundle as test
assertions. Installing edgecnn enables its pytest plugin (edgecnn.testing.plugin): `--edgecnn-build PATH`
and the `edgecnn_build` fixture.

    from edgecnn.testing import assert_accuracy, assert_latency, assert_parity

    def test_the_model_we_ship(edgecnn_build):
        assert_parity(edgecnn_build, against="onnxruntime", data="random", limit=64, atol=1e-4)
        assert_latency(edgecnn_build, p99_ms=5.0, max_ratio={"onnxruntime": 1.2}, runs=200)
        assert_accuracy(edgecnn_build, min_top1=90.0)

    builds.py   a build directory or a bundle (checked and unpacked); nothing is written into either
    budgets.py  the assertions; a failure raises BudgetError (an AssertionError) holding the table
"""

from edgecnn.testing.budgets import BudgetError, assert_accuracy, assert_latency, assert_parity
from edgecnn.testing.builds import Build, open_build

__all__ = ["Build", "BudgetError", "assert_accuracy", "assert_latency", "assert_parity", "open_build"]
