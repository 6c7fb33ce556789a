"""Operator coverage matrix: one tiny generated model per operator the model families use, exported to
ONNX and checked on every available backend against PyTorch. An operator a backend has no implementation
of is reported as unsupported, a model the backend refuses for a stated reason (a rule, a device) as
refused; both with the backend's words."""

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgecnn import backends, compiler
from edgecnn.compiler import targets
from edgecnn.core import tolerance
from edgecnn.core.errors import EdgecnnError, Unsupported

ATOL = 1e-4


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def _bn():
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return bn


# name -> (module factory, input shape); inputs are N(0, 1), 8 channels unless the op needs otherwise
OPS = {
    "conv": (lambda: nn.Conv2d(8, 16, 3), (1, 8, 16, 16)),
    "conv_stride2_pad1": (lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1), (1, 8, 16, 16)),
    "conv_dilation2": (lambda: nn.Conv2d(8, 16, 3, padding=2, dilation=2), (1, 8, 16, 16)),
    "conv_groups4": (lambda: nn.Conv2d(8, 16, 3, padding=1, groups=4), (1, 8, 16, 16)),
    "conv_5x5": (lambda: nn.Conv2d(8, 16, 5, padding=2), (1, 8, 16, 16)),
    "depthwise_conv": (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (1, 8, 16, 16)),
    "pointwise_conv": (lambda: nn.Conv2d(8, 32, 1), (1, 8, 16, 16)),
    "max_pool": (lambda: nn.MaxPool2d(2), (1, 8, 16, 16)),
    "max_pool_3x3_s2": (lambda: nn.MaxPool2d(3, 2, padding=1), (1, 8, 16, 16)),
    "avg_pool": (lambda: nn.AvgPool2d(2), (1, 8, 16, 16)),
    "lp_pool": (lambda: nn.LPPool2d(2, 2), (1, 8, 16, 16)),
    "global_avg_pool": (lambda: nn.AdaptiveAvgPool2d(1), (1, 8, 16, 16)),
    "relu": (nn.ReLU, (1, 8, 16, 16)),
    "relu6": (nn.ReLU6, (1, 8, 16, 16)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (1, 8, 16, 16)),
    "prelu": (lambda: nn.PReLU(8, 0.2), (1, 8, 16, 16)),
    "sigmoid": (nn.Sigmoid, (1, 8, 16, 16)),
    "tanh": (nn.Tanh, (1, 8, 16, 16)),
    "hardswish": (nn.Hardswish, (1, 8, 16, 16)),
    "batchnorm": (_bn, (1, 8, 16, 16)),
    "linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10)), (1, 8, 4, 4)),
    "softmax": (lambda: nn.Softmax(dim=1), (1, 10)),
    "residual_add": (Residual, (1, 8, 16, 16)),
    "concat": (Concat, (1, 8, 16, 16)),
}


def _native_onnx(op_type: str, reference, path: Path, **attrs) -> tuple[np.ndarray, np.ndarray]:
    """A one-node ONNX graph (for ops the PyTorch exporter decomposes), checked against `reference`."""
    import onnx
    from onnx import TensorProto, helper

    x = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = reference(x)
    node = helper.make_node(op_type, ["input"], ["logits"], **attrs)
    graph = helper.make_graph([node], op_type, [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(want.shape))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return x.numpy(), want.numpy()


# Ops the exporter rewrites (LpPool -> Pow/AveragePool, GlobalAveragePool -> ReduceMean) but other
# exporters and model zoos emit as single ONNX nodes.
NATIVE = {
    "lp_pool_onnx": lambda p: _native_onnx("LpPool", nn.LPPool2d(2, 2), p, kernel_shape=[2, 2], strides=[2, 2], p=2),
    "global_avg_pool_onnx": lambda p: _native_onnx("GlobalAveragePool", nn.AdaptiveAvgPool2d(1), p),
}


def export_op(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Export OPS[name] (or build NATIVE[name]) to `path`; return (input, PyTorch output)."""
    from edgecnn.export import torch_export

    if name in NATIVE:
        return NATIVE[name](path)
    factory, shape = OPS[name]
    torch.manual_seed(0)
    module = factory().eval()
    x = torch.randn(*shape)
    torch_export(module, x, opset=18, dynamic=False, path=path)
    with torch.inference_mode():
        return x.numpy(), module(x).numpy()


def check(backend_name: str, onnx_path: Path, x: np.ndarray, want: np.ndarray, *, work: Path,
          target: str | None = None) -> dict:
    """One operator on one backend (its matrix target unless `target` names another)."""
    backend = backends.get(backend_name)
    if not target and not isinstance(backend, backends.OperatorMatrix):
        raise EdgecnnError(f"the {backend_name} backend has no operator-matrix target: name one")
    tgt = targets.load(target or backend.matrix_target)
    try:
        built = compiler.build_into(work, onnx_path, tgt, "fp32", batch=x.shape[0])
        with backend.load(work, built) as r:
            got = next(iter(r.run(x).values()))
    except Unsupported as e:
        return {"status": "unsupported", "detail": str(e)}
    except EdgecnnError as e:
        return {"status": "refused", "detail": str(e)}
    err = tolerance.max_abs(got, want)
    return {"status": "pass" if tolerance.within(err, ATOL, tolerance.magnitude(want)) else "FAIL", "max_abs": err}


def run_matrix(ops=None, backend_names=None) -> dict:
    """{op: {"onnx": [op types], backend: {"status": pass|FAIL|unsupported|refused|unavailable, ...}}}."""
    import onnx

    names = backend_names or [n for n in backends.names() if isinstance(backends.get(n), backends.OperatorMatrix)]
    reasons = {b: backends.get(b).available() for b in names}
    result = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-ops-") as tmp:
        for op in ops or [*OPS, *NATIVE]:
            work = Path(tmp) / op
            work.mkdir()
            x, want = export_op(op, work / "op.onnx")
            result[op] = {"onnx": sorted({n.op_type for n in onnx.load(str(work / "op.onnx")).graph.node})}
            for b in names:
                if reasons[b]:
                    result[op][b] = {"status": "unavailable", "detail": reasons[b]}
                    continue
                (work / b).mkdir()
                result[op][b] = check(b, work / "op.onnx", x, want, work=work / b)
    return result


def matrix_table(matrix: dict):
    from rich.table import Table

    names = [k for k in next(iter(matrix.values())) if k != "onnx"]
    t = Table(title="operator coverage (max abs error vs PyTorch)")
    t.add_column("operator")
    t.add_column("ONNX ops")
    for b in names:
        t.add_column(b)
    style = {"pass": "green", "FAIL": "red", "unsupported": "yellow", "refused": "magenta", "unavailable": "dim"}
    for op, row in matrix.items():
        cells = []
        for b in names:
            r = row[b]
            text = r["status"] + (f" {r['max_abs']:.1e}" if "max_abs" in r else "")
            if r["status"] in ("unsupported", "refused"):
                text += f": {r['detail'][:60]}"
            cells.append(f"[{style[r['status']]}]{text}[/]")
        t.add_row(op, " ".join(row["onnx"]), *cells)
    return t
