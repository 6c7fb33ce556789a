"""Seeded random mutations of small valid models (the file's bytes, the graph's structure, attributes, types,
shapes and values) through `edgecnn compile`, `quantize`, `verify` and `info`, in process through the CLI's
main() (the same error boundary as the `edgecnn` command; a subprocess per case would cost ~2 s of imports):
each case builds or is refused in one line, never a traceback, never a half-written output."""

import contextlib
import io
import os
import random
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus_models import keras_tf2onnx, old_exporter, squeeze_excite
from foreign_models import image_folder
from onnx import TensorProto, helper, numpy_helper

from edgecnn.cli import main

SEED = 22
CASES = int(os.environ.get("EDGECNN_FUZZ_CASES", "300"))
BASES = {"old-exporter": old_exporter, "keras-tf2onnx": keras_tf2onnx, "squeeze-excite": squeeze_excite}
DTYPES = [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL,
          TensorProto.STRING, TensorProto.INT32, 999]


# -- mutations: each takes (rng, ModelProto or bytes) and returns the mutated bytes -----------------------------

def flip_bytes(rng, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 20)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def cut_bytes(rng, raw: bytes) -> bytes:
    return raw[:rng.randrange(len(raw))]


def junk_bytes(rng, raw: bytes) -> bytes:
    return rng.choice([b"", b"\0" * 64, bytes(rng.randrange(256) for _ in range(300)), raw + b"\x12\x34" * 40])


def drop_node(rng, model):
    """A node taken out, its consumers fed its first input (the graph stays sorted; shapes may not fit)."""
    index = rng.randrange(len(model.graph.node))
    node = model.graph.node[index]
    bypass = node.input[0] if node.input else model.graph.input[0].name
    for other in [*model.graph.node, *model.graph.output]:
        names = other.input if hasattr(other, "input") else None
        if names is None:
            other.name = bypass if other.name in node.output else other.name
            continue
        for i, name in enumerate(names):
            if name in node.output:
                names[i] = bypass
    del model.graph.node[index]


def rewire_input(rng, model):
    """One input of a node fed from an earlier tensor (sorted order kept), now and then from nowhere."""
    index = rng.choice([i for i, n in enumerate(model.graph.node) if n.input])
    node = model.graph.node[index]
    earlier = [o for n in model.graph.node[:index] for o in n.output] + [i.name for i in model.graph.input]
    node.input[rng.randrange(len(node.input))] = rng.choice(earlier) if rng.random() < 0.9 else "nowhere"


def shuffle_nodes(rng, model):
    nodes = list(model.graph.node)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


SAME_ARITY = [["Relu", "Sigmoid", "Softmax", "Identity", "Flatten", "GlobalAveragePool", "Transpose", "LRN",
               "Neg", "Exp"], ["Add", "Mul", "Sub", "Div", "Max", "Sum", "Concat", "MatMul", "Reshape", "Conv"]]


def change_op(rng, model):
    """A node's op replaced by one of the same arity (its attributes kept: some no longer fit), now and then by
    an op no backend knows."""
    node = rng.choice(model.graph.node)
    ops = SAME_ARITY[min(len(node.input), 2) - 1] if node.input else SAME_ARITY[0]
    node.op_type = rng.choice(ops) if rng.random() < 0.9 else "NoSuchOp"
    if rng.random() < 0.7:
        del node.attribute[:]


def drop_output_or_initializer(rng, model):
    if rng.random() < 0.5 and model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]
    elif rng.random() < 0.5:
        del model.graph.output[:]
    else:
        model.graph.output[0].name = "not_made"


def change_attribute(rng, model):
    node = rng.choice([n for n in model.graph.node if n.attribute] or list(model.graph.node))
    if not node.attribute:
        node.attribute.append(helper.make_attribute("axis", rng.randint(-6, 6)))
        return
    attr = rng.choice(node.attribute)
    if rng.random() < 0.2:
        node.attribute.remove(attr)
    elif attr.type == onnx.AttributeProto.INTS:
        values = [rng.choice([-3, -1, 0, 1, 2, 3, 7, 1 << 20]) for _ in range(rng.choice([len(attr.ints), 1, 5]))]
        node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute(attr.name, values))
    elif attr.type == onnx.AttributeProto.INT:
        attr.i = rng.choice([-5, -1, 0, 2, 3, 5, 1 << 31])
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    else:
        node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute(attr.name, rng.randint(-2, 2)))


def change_type(rng, model):
    target = rng.choice([model.graph.input[0], model.graph.output[0]])
    if rng.random() < 0.5:
        target.type.tensor_type.elem_type = rng.choice(DTYPES)
    else:
        init = rng.choice(model.graph.initializer)
        init.data_type = rng.choice(DTYPES)


def change_shape(rng, model):
    dims = rng.choice([model.graph.input[0], model.graph.output[0]]).type.tensor_type.shape.dim
    choice = rng.random()
    if choice < 0.3 and dims:
        del dims[rng.randrange(len(dims))]
    elif choice < 0.5:
        dims.add().dim_value = rng.choice([1, 3])
    elif dims:
        dim = dims[rng.randrange(len(dims))]
        if rng.random() < 0.3:
            dim.dim_param = "n"
        else:
            dim.dim_value = rng.choice([0, 1, 2, 5, 64])  # not 4096: quantize resizes its images first (137 s)


def change_values(rng, model):
    init = rng.choice(model.graph.initializer)
    array = numpy_helper.to_array(init).copy()
    if array.dtype == np.int64:
        flat = array.reshape(-1)
        if flat.size:
            flat[rng.randrange(flat.size)] = rng.choice([-2, -1, 0, 3, 7, 1 << 40])
        init.CopyFrom(numpy_helper.from_array(flat.reshape(array.shape), init.name))
    elif rng.random() < 0.5:
        init.CopyFrom(numpy_helper.from_array(np.full_like(array, rng.choice([np.nan, np.inf, 1e30, 0.0])), init.name))
    else:  # the same values under a different shape
        init.CopyFrom(numpy_helper.from_array(array.reshape(-1)[: max(1, array.size // 2)], init.name))


BYTE_MUTATIONS = [flip_bytes, cut_bytes, junk_bytes]
GRAPH_MUTATIONS = [drop_node, drop_node, rewire_input, rewire_input, shuffle_nodes, change_op, change_op,
                   drop_output_or_initializer, change_attribute,
                   change_type, change_shape, change_values]


def mutate(rng, base: bytes) -> tuple[str, bytes]:
    if rng.random() < 0.2:
        mutation = rng.choice(BYTE_MUTATIONS)
        return mutation.__name__, mutation(rng, base)
    model = onnx.load_from_string(base)
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(GRAPH_MUTATIONS)
        mutation(rng, model)
        names.append(mutation.__name__)
    return "+".join(names), model.SerializeToString()


# -- running a case ------------------------------------------------------------------------------------------

def run(*args) -> tuple[int, str]:
    """`edgecnn ARGS` in process: (exit code, stderr); a traceback printed on stdout is put in stderr too."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    stdout = out.getvalue()
    return code, err.getvalue() + (stdout if "Traceback" in stdout else "")


def commands(rng, path: Path, work: Path, calib: Path, build: Path) -> list:
    """The command a case runs on the mutated file, chosen at random (TVM compiles are the slow ones: fewer)."""
    out = work / "out"
    return rng.choices([
        ["info", path], ["info", path, "--json"],
        ["compile", path, "--target", "onnxruntime-cpu", "--out", out],
        ["compile", path, "--target", "host", "--out", out],
        ["quantize", path, "--calib", calib, "--calib-images", 16, "--sensitivity", 0, "--out", out],
        ["verify", build, "--data", "random", "--limit", 2, "--no-localize"],
    ], weights=[3, 2, 5, 1, 1.5, 1.5])[0]


def check_case(code: int, err: str, work: Path, label: str) -> str:
    """The outcome ('built' or 'refused'), after asserting the case left no traceback and no half-made output."""
    assert "Traceback" not in err, f"{label}: traceback\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    leftovers = [p.name for p in [*work.iterdir(), *work.glob("out/*")] if p.name.startswith(".")]
    assert not leftovers, f"{label}: temporary files left: {leftovers}"
    out = work / "out"
    if code == 0:
        assert not out.exists() or any(out.glob("*.json")) or any(out.glob("*.onnx")), f"{label}: empty output"
        return "built"
    assert code == 1, f"{label}: exit {code}\n{err}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"{label}: not one error line\n{err}"
    assert not out.exists() or (out / "manifest.json").exists() or not any(out.iterdir()), \
        f"{label}: half-written {out}: {sorted(p.name for p in out.iterdir())}"
    assert "internal error in edgecnn" not in errors[0], f"{label}: a bug of ours\n{err}"
    return "refused"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {name: make(root / f"{name}.onnx", size=8).read_bytes() for name, make in BASES.items()}


def test_mutated_models_build_or_are_refused_in_one_line(bases, tmp_path):
    rng = random.Random(SEED)
    calib = image_folder(tmp_path / "calib", ["a", "b"], n=8, size=8)
    outcomes, seconds_by_verb, start = {}, {}, time.perf_counter()
    for case in range(CASES):
        base_name = rng.choice(sorted(bases))
        how, data = mutate(rng, bases[base_name])
        work = tmp_path / f"case{case}"
        work.mkdir()
        path = work / "model.onnx"
        path.write_bytes(data)
        build = work / "out"
        args = commands(rng, path, work, calib, build)
        began = time.perf_counter()
        if args[0] == "verify":  # the mutated model compiled (when it compiles), then its build verified
            code, err = run("compile", path, "--target", rng.choice(["onnxruntime-cpu", "host"]), "--out", build)
            if code != 0:
                args = ["compile", path]
        if args[0] != "compile" or "--target" in args:
            code, err = run(*args)
        label = f"case {case} ({base_name}, {how}, edgecnn {' '.join(map(str, args[:1]))})"
        outcome = check_case(code, err, work, label)
        if os.environ.get("EDGECNN_FUZZ_SHOW"):
            last = err.strip().splitlines()[-1][:200] if err.strip() else ""
            print(label, outcome, f"{time.perf_counter() - began:.1f} s", last)
        outcomes[(args[0], outcome)] = outcomes.get((args[0], outcome), 0) + 1
        seconds_by_verb[args[0]] = seconds_by_verb.get(args[0], 0.0) + time.perf_counter() - began
    seconds = time.perf_counter() - start
    print(f"\n{CASES} cases in {seconds:.0f} s: " + ", ".join(f"{v} {k[0]} {k[1]}" for k, v in sorted(outcomes.items()))
          + "; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(seconds_by_verb.items())))
    assert {outcome for _, outcome in outcomes} == {"built", "refused"}  # both kinds of case were exercised


