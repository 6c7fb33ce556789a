"""edgecnn's pytest plugin (entry point pytest11 `edgecnn`: on whenever edgecnn is installed).

    pytest --edgecnn-build runs/lenet5-fashion/build-host-fp32          # or a .edgecnn.tar.gz bundle
    def test_budgets(edgecnn_build): assert_latency(edgecnn_build, p99_ms=5)

Importing it costs little (no torch, no numpy): it is loaded by every pytest run where edgecnn is installed.
"""

import os

import pytest

OPTION, ENV = "--edgecnn-build", "EDGECNN_BUILD"


def pytest_addoption(parser):
    group = parser.getgroup("edgecnn", "edgecnn model budgets")
    group.addoption(OPTION, metavar="PATH", default=None,
                    help=f"the build directory or .edgecnn.tar.gz bundle the edgecnn_build fixture opens "
                         f"(default: ${ENV})")


def build_path(config) -> str | None:
    return config.getoption("edgecnn_build") or os.environ.get(ENV) or None


def pytest_report_header(config):
    path = build_path(config)
    return f"edgecnn build: {path}" if path else None


@pytest.fixture(scope="session")
def edgecnn_build(request):
    """The build or bundle given with --edgecnn-build (an edgecnn.testing.Build), open for the session."""
    from edgecnn.core.errors import EdgecnnError
    from edgecnn.testing import open_build

    path = build_path(request.config)
    if not path:
        pytest.fail(f"no edgecnn build to test: pass {OPTION} PATH (a build directory or a .edgecnn.tar.gz "
                    f"bundle) or set {ENV}", pytrace=False)
    try:
        build = open_build(path)
    except EdgecnnError as e:
        pytest.fail(f"{OPTION} {path}: {e}", pytrace=False)
    with build:
        yield build
