"""Does one fused MobileNet v2 inverted-residual kernel (1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project,
NHWC fp32, batch 1) beat the same block as edgecnn's separate kernels and ONNX Runtime? 2 threads each.

Fused schedule: bands of output rows in parallel; down each band, `step` rows at a time: the step + 2 padded
expanded rows the depthwise window needs (a small local buffer, recomputed at the 2-row halo), their depthwise
rows, then the projection with bias (+ residual) written from registers.
    .venv/bin/python benchmarks/block_fusion.py [--shapes 56x24x144x24,28x32x192x32,14x16x96x16] [--rounds 21]

Writes benchmarks/results/block_fusion.json (medians of interleaved rounds, the CPU named). An experiment:
`edgecnn compile` does not fuse blocks (fused/separate measured 0.90-0.93 on MobileNet v2 224's blocks and
1.03 on the Fashion model's, see the README's tuning section).
"""
import os

os.environ.setdefault("TVM_NUM_THREADS", "2")
import argparse, functools, json, statistics, tempfile
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import s_tir, te

from edgecnn.backends.onnxruntime import NO_SPIN, OrtRunner
from edgecnn.backends.tvm.build import resolve_target
from edgecnn.backends.tvm.cpu import cpu_info
from edgecnn.compiler import targets
from edgecnn.core.rounds import interleaved as interleaved_rounds

HERE = Path(__file__).resolve().parent / "results"


class Block(torch.nn.Module):
    def __init__(self, c, e, o):
        super().__init__()
        self.expand, self.dw = torch.nn.Conv2d(c, e, 1), torch.nn.Conv2d(e, e, 3, padding=1, groups=e)
        self.project, self.residual = torch.nn.Conv2d(e, o, 1), c == o

    def forward(self, x):
        y = self.project(torch.nn.functional.relu6(self.dw(torch.nn.functional.relu6(self.expand(x)))))
        return x + y if self.residual else y


class Nhwc(torch.nn.Module):  # NHWC in and out: edgecnn's NHWC graph then needs no transposes
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def fused_te(H, W, C, E, O, residual, opad=0):
    X = te.placeholder((1, H, W, C), name="X")
    W1, B1 = te.placeholder((C, E), name="W1"), te.placeholder((E,), name="B1")
    W2, B2 = te.placeholder((3, 3, E), name="W2"), te.placeholder((E,), name="B2")
    opad = opad or O  # project channels computed: O padded to whole vectors (edgecnn's legalize does too)
    W3, B3 = te.placeholder((E, opad), name="W3"), te.placeholder((O,), name="B3")
    zero = tvm.tirx.const(0.0, "float32")

    def inside(y, x):
        return tvm.tirx.all(y >= 1, y <= H, x >= 1, x <= W)

    def relu6(v):
        return te.min(te.max(v, zero), 6.0)

    pad = te.compute((1, H + 2, W + 2, C), lambda n, y, x, c: tvm.tirx.if_then_else(
        inside(y, x), X[n, y - 1, x - 1, c], zero), name="pad")
    c, k = te.reduce_axis((0, C), "c"), te.reduce_axis((0, E), "k")
    kh, kw = te.reduce_axis((0, 3), "kh"), te.reduce_axis((0, 3), "kw")
    ea = te.compute((1, H + 2, W + 2, E), lambda n, y, x, e: te.sum(pad[n, y, x, c] * W1[c, e], axis=c), name="expand")
    ex = te.compute((1, H + 2, W + 2, E), lambda n, y, x, e: tvm.tirx.if_then_else(
        inside(y, x), relu6(ea[n, y, x, e] + B1[e]), zero), name="expand_out")  # zero padding of the dw input
    da = te.compute((1, H, W, E), lambda n, y, x, e: te.sum(ex[n, y + kh, x + kw, e] * W2[kh, kw, e],
                                                            axis=[kh, kw]), name="dw")
    dw = te.compute((1, H, W, E), lambda n, y, x, e: relu6(da[n, y, x, e] + B2[e]), name="dw_out")
    pa = te.compute((1, H, W, opad), lambda n, y, x, o: te.sum(dw[n, y, x, k] * W3[k, o], axis=k), name="project")
    out = te.compute((1, H, W, O), lambda n, y, x, o: pa[n, y, x, o] + B3[o] + (X[n, y, x, o] if residual else zero),
                     name="out")
    return te.create_prim_func([X, W1, B1, W2, B2, W3, B3, out])


def tile(width, nvecs, most=24):
    """(pixels, vectors) of a register tile: pixels divide `width`, vectors divide `nvecs`, the most accumulators."""
    return max(((p, v) for p in range(1, 17) if width % p == 0 for v in range(1, nvecs + 1) if nvecs % v == 0
                and p * v <= most), key=lambda t: (t[0] * t[1], t[0]))


def schedule_fused(func, H, W, E, O, lanes, bands, step, halo_at="step", expand_px=0, opad=0):
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("pad"))
    pa, out, dw, da, ex, ea = [sch.get_sblock(n) for n in ("project", "out", "dw_out", "dw", "expand_out", "expand")]
    opad = opad or O
    vlo = lanes if opad % lanes == 0 else lanes // 2
    xp, vp = tile(W, opad // vlo, 28)
    n, y, x, o, k = sch.get_loops(pa)
    yo, ys, yi = sch.split(y, [bands, None, step])
    xo, xi = sch.split(x, [None, xp])
    oo, ov, ol = sch.split(o, [None, vp, vlo])
    sch.reorder(n, yo, ys, yi, xo, oo, k, xi, ov, ol)
    band = sch.fuse(n, yo)
    sch.parallel(band)
    sch.set_scope(pa, 0, "local")
    sch.reverse_compute_at(out, oo, preserve_unit_loops=True)
    sch.compute_at(dw, ys, preserve_unit_loops=True)  # the step's depthwise rows
    xd, vd = tile(W, E // lanes, 16)
    dy, dx, de = sch.get_loops(dw)[-3:]
    dxo, dxi = sch.split(dx, [None, xd])
    deo, dev, dei = sch.split(de, [None, vd, lanes])
    sch.reorder(dy, deo, dxo, dxi, dev, dei)
    sch.compute_at(da, dxo, preserve_unit_loops=True)
    sch.set_scope(da, 0, "local")
    sch.compute_at(ex, ys if halo_at == "step" else band, preserve_unit_loops=True)  # step + 2 expanded rows
    ey, exx, ee = sch.get_loops(ex)[-3:]
    xe, ve = tile(W + 2, E // lanes)  # 58 padded columns = 2 x 29: 2 pixels x 9 vectors
    if expand_px:  # a tile that does not divide the pixels: the last one is predicated
        xe, ve = expand_px, tile(expand_px, E // lanes)[1]
    exo, exi = sch.split(exx, [None, xe])
    eeo, eev, eei = sch.split(ee, [None, ve, lanes])
    sch.reorder(ey, eeo, exo, exi, eev, eei)
    sch.compute_at(ea, exo, preserve_unit_loops=True)
    sch.set_scope(ea, 0, "local")
    for blk, nvec in ((ea, ve), (da, vd)):
        register_tile(sch, blk, lanes, nvec)
    sch.vectorize(ol)
    sch.unroll(xi)
    sch.unroll(ov)
    init = sch.decompose_reduction(pa, k)
    ls = sch.get_loops(init)
    sch.vectorize(ls[-1])
    for b in (ex, dw):
        ls = sch.get_loops(b)
        sch.vectorize(ls[-1])
        for lp in ls[-3:-1]:
            sch.unroll(lp)
    ls = sch.get_loops(out)
    vl = next(v for v in (lanes, lanes // 2, lanes // 4, 1) if O % v == 0)
    ov_, ol_ = sch.split(ls[-1], [None, vl])
    sch.vectorize(ol_)
    sch.unroll(ov_)
    sch.unroll(ls[-2])
    return sch, {"bands": bands, "step": step, "halo_at": halo_at, "project_tile": [xp, vp, vlo],
                 "dw_tile": [xd, vd, lanes], "expand_tile": [xe, ve, lanes]}


def register_tile(sch, blk, vl, nvec):
    """A compute_at block's loops [..., pixels, channels, reductions] -> reductions, pixels, vectors, lanes;
    the reductions rolled except a 3x3 window, the tile unrolled and vectorized."""
    nred = sum(int(iv.iter_type) == 2 for iv in sch.get(blk).iter_vars)
    loops = sch.get_loops(blk)
    px, ch, red = loops[-nred - 2], loops[-nred - 1], loops[-nred:]
    cv, cl = sch.split(ch, [nvec, vl])
    sch.reorder(*red, px, cv, cl)
    sch.vectorize(cl)
    for lp in (px, cv, *(red if nred == 2 else ())):
        sch.unroll(lp)
    init = sch.decompose_reduction(blk, red[0])
    ls = sch.get_loops(init)
    sch.vectorize(ls[-1])


def block_weights(block):
    w1 = block.expand.weight.detach().numpy()[:, :, 0, 0].T.copy()
    w2 = block.dw.weight.detach().numpy()[:, 0].transpose(1, 2, 0).copy()
    w3 = block.project.weight.detach().numpy()[:, :, 0, 0].T.copy()
    return [w1, block.expand.bias.detach().numpy(), w2, block.dw.bias.detach().numpy(), w3,
            block.project.bias.detach().numpy()]


def build_fused(block, H, W, C, E, O, spec, lanes, bands, step, halo_at, expand_px=0, pad_oc=True):
    opad = -(-O // lanes) * lanes if pad_oc and O % lanes and O > lanes else O
    sch, info = schedule_fused(fused_te(H, W, C, E, O, C == O, opad), H, W, E, O, lanes, bands, step, halo_at,
                               expand_px, opad)
    info["project_channels"] = opad
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"]}), tvm.target.Target(spec))
    dev = tvm.cpu()
    weights = block_weights(block)
    weights[4] = np.pad(weights[4], [(0, 0), (0, opad - O)])
    args = [tvm.runtime.tensor(a.astype(np.float32), dev) for a in weights]
    out = tvm.runtime.empty((1, H, W, O), "float32", dev)
    fn = lib["main"]

    def run(x):
        fn(x, *args, out)
        return out
    return run, info


def build_separate(block, H, W, C, work: Path):
    """The block as edgecnn compiles it: NHWC ONNX -> compile_model(..., "host") -> the build's VM."""
    from edgecnn import backends
    from edgecnn.compiler import compile_model
    from edgecnn.export import torch_export

    onnx_path = work / "block_nhwc.onnx"
    torch_export(Nhwc(block).eval(), torch.zeros(1, H, W, C), opset=18, dynamic=False, path=onnx_path)
    build = compile_model(onnx_path, "host", out=work / "build", given={"layout": "NHWC"})
    manifest = json.loads((build / "manifest.json").read_text())
    runner = backends.get("tvm").load(build, manifest, threads=2)
    kernels = manifest["artifact"]["schedules"]
    return (lambda x: runner.main(x)), kernels, onnx_path


def conv_kernels(onnx_path: Path, spec):
    """edgecnn's three conv kernels of the block (its lowering and schedules, as compile uses them), called
    back to back on preallocated tensors: the separate kernels without the VM and the layout transposes
    this one-block graph keeps (in a whole NHWC network they are gone); the residual add is left out."""
    from edgecnn.backends.tvm import build, frontend, passes

    tgt = targets.load("host")
    mod, _ = build.schedule(build.lower(passes.prepare(frontend.import_onnx(onnx_path), tgt), spec), spec)
    dev, steps, made = tvm.cpu(), [], {}
    for bd in mod["main"].body.blocks[0].bindings:
        gv = bd.value.args[0]
        if "conv2d" not in gv.name_hint:
            continue
        func = mod[gv].with_attr("global_symbol", "main")
        fn = tvm.compile(tvm.IRModule({"main": func}), tvm.target.Target(spec))["main"]
        ins = [a.value if hasattr(a, "value") else made.get(a) for a in bd.value.args[1].fields]
        out = made[bd.var] = tvm.runtime.empty([int(d) for d in bd.var.ty.shape], "float32", dev)
        steps.append((fn, ins, out))

    def run(x):
        for fn, ins, out in steps:
            fn(*[x if a is None else a for a in ins], out)
        return out
    return run, [gv for gv in mod.get_global_vars() if "conv2d" in gv.name_hint]


def build_ort(block, H, W, C, work: Path, spin: bool = True):
    from edgecnn.export import torch_export

    onnx_path = work / "block_nchw.onnx"
    torch_export(block, torch.zeros(1, C, H, W), opset=18, dynamic=False, path=onnx_path)
    # not spinning: ORT's workers spin-wait after each run by default, on the cores TVM's pool wants next
    runner = OrtRunner(onnx_path, 2, config=None if spin else NO_SPIN)
    return lambda x: runner.session.run(None, {runner.input_name: x})[0]


def interleaved(subjects: dict, rounds: int, round_ms: float = 40.0) -> dict:
    """Each round times every subject for ~round_ms (edgecnn.core.rounds: a new random order each round, a few
    untimed runs first: the previous subject's thread pool still spins for a while, ORT's and TVM's both do)."""
    per_round, _ = interleaved_rounds({k: functools.partial(fn, x) for k, (fn, x) in subjects.items()},
                                      rounds=rounds, seconds=round_ms / 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v),
                "q1_ms": float(np.percentile(v, 25)), "q3_ms": float(np.percentile(v, 75)), "rounds_ms": v}
            for k, v in per_round.items()}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def run_shape(shape: str, spec, lanes, args) -> dict:
    H, C, E, O = (int(v) for v in shape.split("x"))
    W = H
    torch.manual_seed(0)
    block = Block(C, E, O).eval()
    x = np.random.default_rng(0).standard_normal((1, H, W, C)).astype(np.float32)
    with torch.no_grad():
        want = Nhwc(block)(torch.from_numpy(x)).numpy()
    dev = tvm.cpu()
    xt = tvm.runtime.tensor(x, dev)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    with tempfile.TemporaryDirectory() as tmp:
        separate, kernels, onnx_path = build_separate(block, H, W, C, Path(tmp))
        convs, _ = conv_kernels(onnx_path, spec)
        ort_run = build_ort(block, H, W, C, Path(tmp), spin=args.ort_spin)
        macs = H * W * (C * E + 9 * E + E * O)  # useful MACs (without the fused kernel's halo recompute)
        # measured: one band per thread; a block under ~3 M MACs runs faster on one thread (no fork-join);
        # 14 rows a step on tall bands, else 7 (2-4 rows a step: the 2-row halo recompute shows)
        bands = args.bands or (1 if macs < 3e6 or H % 2 else 2)
        rows = H // bands
        step = args.step or next(s for s in ((14, 7) if rows >= 28 else (7,)) + (4, 2, 1) if rows % s == 0)
        fused, info = build_fused(block, H, W, C, E, O, spec, lanes, bands, step, args.halo_at)
        outs = {"separate": separate(xt).numpy(), "fused": fused(xt).numpy(),
                "separate_convs": convs(xt).numpy() + (x if C == O else 0),
                "ort": ort_run(x_nchw).transpose(0, 2, 3, 1)}
        err = {f"fused_vs_{k}": float(np.abs(outs["fused"] - outs[k]).max()) for k in ("separate", "separate_convs", "ort")}
        err["fused_vs_torch"] = float(np.abs(outs["fused"] - want).max())
        err["separate_vs_ort"] = float(np.abs(outs["separate"] - outs["ort"]).max())
        t = interleaved({"separate": (separate, xt), "separate_convs": (convs, xt), "fused": (fused, xt),
                         "ort": (ort_run, x_nchw)}, args.rounds)
    return {"shape": f"{H}x{W}x{C} -> {E} -> {O}", "residual": C == O, "macs": macs, "times": t,
            "max_abs_err": err, "match": all(v < 1e-4 for v in err.values()), "fused_schedule": info,
            "separate_kernels": kernels,
            "fused_over_separate": t["fused"]["median_ms"] / t["separate"]["median_ms"],
            "fused_over_separate_convs": t["fused"]["median_ms"] / t["separate_convs"]["median_ms"],
            "fused_over_ort": t["fused"]["median_ms"] / t["ort"]["median_ms"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="56x24x144x24,28x32x192x32,14x16x96x16", help="HxCxExO, comma separated")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--bands", type=int, default=0, help="parallel row bands (0: auto)")
    ap.add_argument("--step", type=int, default=0, help="output rows per step down a band (0: auto)")
    ap.add_argument("--halo-at", choices=("step", "band"), default="step",
                    help="expanded rows computed per step (halo recomputed per step) or once per band")
    ap.add_argument("--ort-spin", action="store_true",
                    help="ORT's default spin-waiting workers (here they fight the other job and TVM's pool: ORT "
                         "and the VM both ran ~2x slower); default: allow_spinning=0")
    ap.add_argument("--out", default=str(HERE / "block_fusion.json"))
    args = ap.parse_args()
    spec = resolve_target(targets.load("host"))
    lanes = cpu_info(spec).lanes
    results = [run_shape(s, spec, lanes, args) for s in args.shapes.split(",")]
    print("ms: median [q1-q3] of interleaved rounds; separate = edgecnn build (VM, 3 convs + 3 transposes), "
          "convs = its 3 conv kernels alone")
    print(f"{'shape':24} {'separate':>20} {'convs':>20} {'fused':>20} {'ORT':>20} {'f/sep':>6} {'f/convs':>7} "
          f"{'f/ORT':>6} match")
    for r in results:
        cell = {k: f"{v['median_ms']:.3f} [{v['q1_ms']:.3f}-{v['q3_ms']:.3f}]" for k, v in r["times"].items()}
        print(f"{r['shape']:24} {cell['separate']:>20} {cell['separate_convs']:>20} {cell['fused']:>20} "
              f"{cell['ort']:>20} {r['fused_over_separate']:6.2f} {r['fused_over_separate_convs']:7.2f} "
              f"{r['fused_over_ort']:6.2f} {r['match']}")
    report = {"cpu": cpu_model(), "ort_spinning": args.ort_spin, "tvm_target": spec, "lanes": lanes, "threads": 2,
              "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"), "rounds": args.rounds,
              "timing": "median over interleaved rounds of the mean per-call time in a round (~40 ms each, after "
                        "~10 ms untimed); q1-q3 the spread", "args": vars(args), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
