"""Variants of one model evaluated as one graph: each variant's nodes that differ from the base graph become a
branch off the shared base (the trunk), so what all variants compute alike runs once.

Per-layer sensitivity quantizes one layer at a time: every such variant computes the fp32 graph's values up to
that layer. Run one by one, each repeats that prefix; merged, ONNX Runtime computes it once and each branch
gives its variant's logits (tests/test_quantize.py checks them against the variants run alone).
"""

BRANCH = "#{}"  # suffix of a branch's tensors and nodes


def _key(node) -> bytes:
    """A node's computation: what it reads, writes and does (its name aside)."""
    from onnx import NodeProto

    bare = NodeProto()
    bare.CopyFrom(node)
    bare.name = ""
    return bare.SerializeToString()


def merge(base, variants: list):
    """`base` plus, for each variant, its nodes that differ from base (and all they feed), their tensors renamed
    with #i; one more graph output per variant. Returns (merged model, the variants' output names)."""
    from onnx import ModelProto

    model = ModelProto()
    model.CopyFrom(base)
    del model.graph.value_info[:]
    trunk = {_key(n) for n in base.graph.node}
    inits = {i.name: i.SerializeToString() for i in base.graph.initializer}
    output = base.graph.output[0]
    names = []
    for i, variant in enumerate(variants):
        renamed = _branch_initializers(model, variant, inits, BRANCH.format(i))
        for node in variant.graph.node:
            if _key(node) in trunk and not any(n in renamed for n in node.input):
                continue  # computes what base computes
            copy = model.graph.node.add()
            copy.CopyFrom(node)
            copy.name += BRANCH.format(i)
            copy.input[:] = [renamed.get(n, n) for n in node.input]
            for o in node.output:
                renamed[o] = o + BRANCH.format(i)
            copy.output[:] = [renamed[o] for o in node.output]
        if output.name not in renamed:  # the variant computes what base computes
            names.append(output.name)
            continue
        out = model.graph.output.add()
        out.CopyFrom(output)
        out.name = renamed[output.name]
        names.append(out.name)
    return model, names


def _branch_initializers(model, variant, inits: dict, suffix: str) -> dict:
    """A variant's initializers that base lacks (or holds with other values), added renamed; old -> new name."""
    renamed = {}
    for init in variant.graph.initializer:
        if inits.get(init.name) == init.SerializeToString():
            continue
        copy = model.graph.initializer.add()
        copy.CopyFrom(init)
        copy.name = renamed[init.name] = init.name + suffix
    return renamed

