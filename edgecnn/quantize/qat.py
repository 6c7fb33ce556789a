"""Quantization-aware training: fine-tune under fake quantization, then quantize with the same ranges.

NVIDIA's recipe for TensorRT (pytorch-quantization): calibrate the activation ranges, then fine-tune with
the ranges fixed while weights are fake-quantized with their current max |w| per output channel. The
fine-tuned model is exported and quantized by ptq.quantize_onnx with the very ranges it trained under,
so the Q/DQ model is the one that was trained.

Hand-written, because PyTorch's own tooling does not fit: eager torch.ao.quantization (prepare_qat) is
deprecated and does not export to this Q/DQ form, and PT2E moved to torchao, which we do not depend on.
torch.fx puts torch.fake_quantize_* exactly on the tensors ONNX Runtime's quantizer puts Q/DQ on.
A tensor is named on both sides by the weighted layer that produces it ("out", module) or, failing that,
first consumes it ("in", module). BatchNorm keeps its running statistics and is folded into the weight
before fake quantization, as export folds it.
"""

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.core.errors import EdgecnnError

ADDS = (operator.add, torch.add)


def fake_quant_weight(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 in [-127, 127], scale max|w| / 127 (per output channel): ONNX Runtime's weight rule."""
    if per_channel:
        scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / 127).clamp_min(1e-12).float()
        return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                      0, -127, 127)
    return torch.fake_quantize_per_tensor_affine(w, max(float(w.detach().abs().max()) / 127, 1e-12), 0, -127, 127)


class ActFakeQuant(nn.Module):
    """Per-tensor symmetric int8 activation with a fixed calibrated range (QuantizeLinear saturates at -128)."""

    def __init__(self, amax: float):
        super().__init__()
        self.scale = max(float(amax) / 127, 1e-12)

    def forward(self, x):
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, -128, 127)


class QuantConv(nn.Module):
    """Conv2d (+ the BatchNorm after it, folded with its running statistics) with a fake-quant weight
    (a float one for a layer kept in fp32: folded all the same, so the graph matches the export's)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, per_channel: bool, enabled: bool = True):
        super().__init__()
        self.conv, self.bn, self.per_channel, self.enabled = conv, bn, per_channel, enabled

    def forward(self, x):
        c, w, b = self.conv, self.conv.weight, self.conv.bias
        if self.bn is not None:
            k = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            w = w * k.reshape(-1, 1, 1, 1)
            b = self.bn.bias - self.bn.running_mean * k + (b * k if b is not None else 0)
        w = fake_quant_weight(w, self.per_channel) if self.enabled else w
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)


class QuantLinear(nn.Module):
    def __init__(self, linear: nn.Linear, per_channel: bool):
        super().__init__()
        self.linear, self.per_channel = linear, per_channel

    def forward(self, x):
        return F.linear(x, fake_quant_weight(self.linear.weight, self.per_channel), self.linear.bias)


def onnx_keys(model) -> dict[tuple, str]:
    """{("out"|"in", module): ONNX tensor} for the activations of an exported model (see fx_key)."""
    from edgecnn.core.onnx_utils import WEIGHTED

    inits = {i.name for i in model.graph.initializer}
    weighted = [(n, n.input[1].removesuffix(".weight")) for n in model.graph.node
                if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits]
    by_tensor = {n.output[0]: ("out", m) for n, m in weighted}
    for n, m in weighted:
        if n.input[0] not in by_tensor or by_tensor[n.input[0]][0] == "in":
            by_tensor[n.input[0]] = min(by_tensor.get(n.input[0], ("in", m)), ("in", m))
    return {key: tensor for tensor, key in by_tensor.items()}


def fx_key(node, weighted: dict) -> tuple | None:
    if node in weighted:
        return ("out", weighted[node])
    users = [weighted[u] for u in node.users if u in weighted and u.args[0] is node]
    return ("in", min(users)) if users else None


def _module(gm, target: str):
    return gm.get_submodule(target)


def _fold_targets(gm) -> dict:
    """{conv node: its BatchNorm node} for every Conv2d whose only user is a BatchNorm2d."""
    pairs = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(_module(gm, n.target), nn.Conv2d) and len(n.users) == 1:
            user = next(iter(n.users))
            if user.op == "call_module" and isinstance(_module(gm, user.target), nn.BatchNorm2d):
                pairs[n] = user
    return pairs


def trace(model: nn.Module):
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, ... for data-dependent Python
        raise EdgecnnError(f"QAT cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}): "
                           "use --method ptq") from None


def prepare(model: nn.Module, ranges: dict, fp32_onnx, skip: set[str], *, per_channel: bool):
    """A torch.fx copy of `model` (sharing its parameters) with fake quantization where the Q/DQ go."""
    gm = trace(model)
    layers = {n: n.target for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(_module(gm, n.target), (nn.Conv2d, nn.Linear))}
    folds = _fold_targets(gm)
    for n, target in layers.items():
        mod, quantized = _module(gm, target), target not in skip
        if isinstance(mod, nn.Conv2d):
            bn = folds.get(n)
            gm.add_submodule(target, QuantConv(mod, bn and _module(gm, bn.target), per_channel, quantized))
            if bn is not None:
                bn.replace_all_uses_with(n)
                gm.graph.erase_node(bn)
        elif quantized:
            gm.add_submodule(target, QuantLinear(mod, per_channel))
    _insert_act_quant(gm, layers, ranges, onnx_keys(fp32_onnx), skip=skip)
    gm.recompile()
    return gm


def _quantized_inputs(gm, layers: dict, skip: set[str]):
    """(consumer, input node) for the activation inputs ONNX Runtime quantizes (Conv/Linear, residual Add)."""
    for n in list(gm.graph.nodes):
        if n in layers and layers[n] not in skip:
            yield n, n.args[0]
        elif n.op == "call_function" and n.target in ADDS and f"{_add_scope(n)}.add" not in skip:
            yield from ((n, a) for a in n.args[:2] if isinstance(a, torch.fx.Node))


def _add_scope(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else node.name


def _insert_act_quant(gm, layers: dict, ranges: dict, keys: dict, *, skip: set[str]) -> None:
    pending = [(consumer, arg, fx_key(arg, layers)) for consumer, arg in _quantized_inputs(gm, layers, skip)]
    for i, (consumer, arg, key) in enumerate(pending):
        tensor = keys.get(key)
        if tensor is None or tensor not in ranges:
            raise EdgecnnError(f"QAT cannot match the input of {consumer.name} ({key}) to an ONNX tensor: "
                               "use --method ptq for this model")
        gm.add_submodule(f"act_fq_{i}", ActFakeQuant(ranges[tensor][1]))
        with gm.graph.inserting_before(consumer):
            fq = gm.graph.call_module(f"act_fq_{i}", (arg,))
        consumer.replace_input_with(arg, fq)


def set_qat_mode(gm) -> None:
    """Train mode (dropout on) with every BatchNorm frozen: QAT keeps the statistics export folds."""
    gm.train()
    for m in gm.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune(gm, rec, *, epochs: int, lr: float, limit: int | None = None, world=None) -> list[dict]:
    """Fine-tune the fake-quant model on the recipe's train split (AdamW, cosine decay); per-epoch history.

    `world`: the ranks sharing the work (edgecnn.train.distributed; default this process alone), on CPU."""
    from edgecnn.data import load_split
    from edgecnn.train import distributed, engine

    world = world or distributed.World()
    data = load_split(rec.data, "train")
    data = data.subset(slice(0, limit)) if limit else data
    batch, lr = distributed.rank_batch(rec.schedule.batch_size, lr, rec.distributed, world.size)
    steps = engine.steps_per_epoch(len(data), world, batch)
    params = [p for p in gm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=rec.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    history = engine.run_epochs(world.wrap(gm), data, load_split(rec.data, "val"), rec, opt=opt, sched=sched,
                                world=world, epochs=epochs, gen=torch.Generator().manual_seed(rec.seed + world.rank),
                                batch=batch, label="QAT epoch", set_mode=set_qat_mode)
    gm.eval()
    return [{**row, "val_top1_fakequant": row["val_top1"]} for row in history]
