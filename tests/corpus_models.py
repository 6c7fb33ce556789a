"""A corpus of classifier graphs written with onnx.helper (nothing downloaded): what older exporters wrote
(IR 3 / opset 9, unfused BatchNormalization, N-ary Sum, channel shuffles through 5-D tensors, flatten by
Reshape of a computed shape) and what the well-known classifier families are built from (ShuffleNet,
ResNet bottlenecks, Inception/GoogLeNet, DenseNet, SqueezeNet and SE blocks, tf2onnx's NHWC Keras graphs,
upsampling heads). Small spatial sizes: each compiles in seconds. CORPUS: name -> maker(path, size=...)."""

import numpy as np
import onnx
from foreign_models import Weights, conv
from onnx import TensorProto as T
from onnx import helper, numpy_helper

CLASSES = 10


class Graph:
    """Nodes and weights of one model, written as ONNX by save()."""

    def __init__(self, seed: int):
        self.w, self.nodes, self.count = Weights(seed), [], 0

    def node(self, op: str, inputs: list, **attrs) -> str:
        self.count += 1
        out = f"{op.lower()}{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def ints(self, name: str, values) -> str:
        self.w.tensors[name] = numpy_helper.from_array(np.asarray(values, np.int64), name)
        return name

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, pads=None) -> str:
        self.count += 1
        (node,) = conv(self.w, x, f"conv{self.count}", cin, cout, k, stride, group)
        if pads is not None:
            node.attribute.remove(next(a for a in node.attribute if a.name == "pads"))
            node.attribute.append(helper.make_attribute("pads", pads))
        self.nodes.append(node)
        return node.output[0]

    def bn(self, x: str, c: int) -> str:
        n = f"bn{self.count + 1}"
        w = self.w
        stats = [w(f"{n}_s", c, value=np.linspace(0.5, 1.5, c)), w(f"{n}_b", c), w(f"{n}_m", c),
                 w(f"{n}_v", c, value=np.linspace(0.5, 2.0, c))]
        return self.node("BatchNormalization", [x, *stats], epsilon=1e-5)

    def conv_bn_relu(self, x: str, cin: int, cout: int, **kw) -> str:
        return self.node("Relu", [self.bn(self.conv(x, cin, cout, **kw), cout)])

    def gemm(self, x: str, cin: int, cout: int = CLASSES) -> str:
        self.count += 1
        return self.node("Gemm", [x, self.w(f"fc{self.count}_w", cout, cin), self.w(f"fc{self.count}_b", cout)],
                         transB=1)

    def shuffle(self, x: str, c: int, groups: int, hw: int, batch: int = 1) -> str:
        """ShuffleNet's channel shuffle: N x g x C/g x H x W, swap the two channel axes, back to 4-D."""
        r5 = self.node("Reshape", [x, self.ints(f"shp{self.count}", [batch, groups, c // groups, hw, hw])])
        t5 = self.node("Transpose", [r5], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [t5, self.ints(f"shp{self.count}", [batch, c, hw, hw])])

    def flatten_by_shape(self, x: str) -> str:
        """x.view(x.size(0), -1) as the old torch exporter wrote it: Shape, Gather, Unsqueeze, Concat, Reshape."""
        n = self.node("Gather", [self.node("Shape", [x]), self.ints(f"zero{self.count}", 0)], axis=0)
        dims = self.node("Concat", [self.node("Unsqueeze", [n], axes=[0]), self.ints(f"m1{self.count}", [-1])], axis=0)
        return self.node("Reshape", [x, dims])

    def save(self, path, x, out, *, opset: int, ir: int | None = None, shape=None, weights_as_inputs=False):
        inputs = [helper.make_tensor_value_info(x, T.FLOAT, shape)]
        if weights_as_inputs:  # the Caffe2-era zoo: IR 3 lists every initializer as a graph input too
            inputs += [helper.make_tensor_value_info(n, t.data_type, list(t.dims)) for n, t in self.w.tensors.items()]
        outputs = [helper.make_tensor_value_info(out, T.FLOAT, [shape[0], CLASSES])]
        graph = helper.make_graph(self.nodes, path.stem, inputs, outputs, list(self.w.tensors.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="corpus")
        if ir:
            model.ir_version = ir
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def old_exporter(path, size: int = 16):
    """IR 3 / opset 9 as the torch 0.4 / caffe2 exporters wrote it: unfused BatchNormalization, a 3-input Sum,
    a 5-D channel shuffle, a grouped conv, flatten by Reshape of a computed shape, Softmax."""
    g, hw = Graph(10), size // 2
    x = g.conv_bn_relu("data", 3, 16, stride=2)
    s = g.shuffle(x, 16, 4, hw)
    y = g.bn(g.conv(s, 16, 16, group=4), 16)
    d = g.bn(g.conv(s, 16, 16, group=16), 16)
    z = g.node("Relu", [g.node("Sum", [x, y, d])])
    p = g.node("MaxPool", [z], kernel_shape=[2, 2], strides=[2, 2])
    flat = g.flatten_by_shape(p)
    head = g.gemm(flat, 16 * (hw // 2) ** 2)
    return g.save(path, "data", g.node("Softmax", [head], axis=1), opset=9, ir=3, shape=[1, 3, size, size],
                  weights_as_inputs=True)


def shufflenet_v2(path, size: int = 16):
    """ShuffleNet v2 units: Split on channels, one half through 1x1 - depthwise - 1x1, Concat, shuffle; a
    stride-2 unit with two branches; global pool as ReduceMean; LogSoftmax head (opset 11)."""
    g = Graph(11)
    x = g.conv_bn_relu("input", 3, 16)
    a, b = "half_a", "half_b"
    g.nodes.append(helper.make_node("Split", [x], [a, b], axis=1, split=[8, 8]))
    bb = g.conv_bn_relu(g.bn(g.conv(g.conv_bn_relu(b, 8, 8, k=1), 8, 8, group=8), 8), 8, 8, k=1)
    u = g.shuffle(g.node("Concat", [a, bb], axis=1), 16, 2, size)
    left = g.conv_bn_relu(g.bn(g.conv(u, 16, 16, stride=2, group=16), 16), 16, 16, k=1)
    right = g.conv_bn_relu(g.bn(g.conv(g.conv_bn_relu(u, 16, 16, k=1), 16, 16, stride=2, group=16), 16), 16, 16, k=1)
    v = g.shuffle(g.node("Concat", [left, right], axis=1), 32, 2, size // 2)
    pooled = g.node("ReduceMean", [v], axes=[2, 3], keepdims=0)
    return g.save(path, "input", g.node("LogSoftmax", [g.gemm(pooled, 32)], axis=1), opset=11,
                  shape=[1, 3, size, size])


def resnet_bottleneck(path, size: int = 16):
    """ResNet bottlenecks (1x1 - 3x3 - 1x1, unfused BN) joined by a 2-input Sum; a maxout Max of three
    branches, a Mean of two; global pool as an AveragePool as big as the map; Flatten, Gemm (opset 9)."""
    g = Graph(12)
    x = g.node("MaxPool", [g.conv_bn_relu("data", 3, 16)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    body = g.bn(g.conv(g.conv_bn_relu(g.conv_bn_relu(x, 16, 8, k=1), 8, 8), 8, 16, k=1), 16)
    y = g.node("Relu", [g.node("Sum", [body, x])])
    branches = [g.conv(y, 16, 16, k=k) for k in (1, 3, 3)]
    m = g.node("Max", branches)
    n = g.node("Mean", [m, y])
    pool = g.node("AveragePool", [n], kernel_shape=[size // 2] * 2)
    return g.save(path, "data", g.gemm(g.node("Flatten", [pool], axis=1), 16), opset=9, ir=3,
                  shape=[1, 3, size, size], weights_as_inputs=True)


def inception(path, size: int = 16):
    """GoogLeNet: a stem with LRN, an Inception module (1x1; 1x1 - 3x3; 1x1 - Pad - 5x5; 3x3 max pool - 1x1)
    concatenated on channels, global AveragePool, Dropout, flatten by Reshape [0, -1], Softmax (opset 9)."""
    g = Graph(13)
    x = g.node("Relu", [g.conv("data", 3, 16, stride=2)])
    x = g.node("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    b1 = g.node("Relu", [g.conv(x, 16, 8, k=1)])
    b2 = g.node("Relu", [g.conv(g.node("Relu", [g.conv(x, 16, 8, k=1)]), 8, 12)])
    padded = g.node("Pad", [g.node("Relu", [g.conv(x, 16, 4, k=1)])], pads=[0, 0, 2, 2, 0, 0, 2, 2])
    b3 = g.node("Relu", [g.conv(padded, 4, 6, k=5, pads=[0, 0, 0, 0])])
    b4 = g.node("Relu", [g.conv(g.node("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 16, 6, k=1)])
    cat = g.node("Concat", [b1, b2, b3, b4], axis=1)
    pool = g.node("GlobalAveragePool", [cat])
    drop = g.node("Dropout", [pool], ratio=0.4)
    flat = g.node("Reshape", [drop, g.ints("flat", [0, -1])])
    return g.save(path, "data", g.node("Softmax", [g.gemm(flat, 32)], axis=1), opset=9, shape=[1, 3, size, size])


def densenet(path, size: int = 16):
    """DenseNet: BN - ReLU - 1x1 - BN - ReLU - 3x3 layers each concatenated onto what came before, a
    transition (BN - ReLU - 1x1 - 2x2 AveragePool), then BN - ReLU - GlobalAveragePool - Flatten - Gemm."""
    g, c = Graph(14), 8
    x = g.conv("data", 3, c)
    for _ in range(3):
        new = g.conv(g.node("Relu", [g.bn(g.conv(g.node("Relu", [g.bn(x, c)]), c, 16, k=1), 16)]), 16, 4)
        x, c = g.node("Concat", [x, new], axis=1), c + 4
    x = g.node("AveragePool", [g.conv(g.node("Relu", [g.bn(x, c)]), c, 12, k=1)], kernel_shape=[2, 2], strides=[2, 2])
    pool = g.node("GlobalAveragePool", [g.node("Relu", [g.bn(x, 12)])])
    return g.save(path, "data", g.gemm(g.node("Flatten", [pool]), 12), opset=9, shape=[1, 3, size, size])


def squeeze_excite(path, size: int = 16):
    """SqueezeNet fire modules (squeeze 1x1, expand 1x1 and 3x3, Concat) with a squeeze-and-excitation block
    (ReduceMean keepdims - 1x1 - ReLU - 1x1 - HardSigmoid - Mul), HardSwish, a 1x1 classifier on a pooled
    map made 4-D by Unsqueeze and taken back by Squeeze, Softmax (opset 14)."""
    g = Graph(15)
    x = g.node("HardSwish", [g.conv("data", 3, 16, stride=2)])
    s = g.node("Relu", [g.conv(x, 16, 4, k=1)])
    fire = g.node("Concat", [g.node("Relu", [g.conv(s, 4, 8, k=1)]), g.node("Relu", [g.conv(s, 4, 8)])], axis=1)
    se = g.node("ReduceMean", [fire], axes=[2, 3], keepdims=1)
    gate = g.node("HardSigmoid", [g.conv(g.node("Relu", [g.conv(se, 16, 4, k=1)]), 4, 16, k=1)], alpha=1 / 6, beta=0.5)
    y = g.node("Mul", [fire, gate])
    pooled = g.node("ReduceMean", [y], axes=[2, 3], keepdims=0)
    four = g.node("Unsqueeze", [pooled, g.ints("hw", [2, 3])])
    logits = g.node("Squeeze", [g.conv(four, 16, CLASSES, k=1), g.ints("hw2", [2, 3])])
    return g.save(path, "data", g.node("Softmax", [logits], axis=1), opset=14, shape=[1, 3, size, size])


def keras_tf2onnx(path, size: int = 16):
    """A Keras MobileNet through tf2onnx: NHWC input, Transpose to NCHW, 'same' padding of a stride-2 conv as
    an explicit asymmetric Pad, Relu6 as Clip, a residual Add, BatchNormalization, Transpose back to NHWC,
    ReduceMean over H and W, MatMul + Add, Softmax (opset 13)."""
    g = Graph(16)
    six = [g.w("lo", value=np.float32(0)), g.w("hi", value=np.float32(6))]
    x = g.node("Transpose", ["input_1"], perm=[0, 3, 1, 2])
    x = g.node("Pad", [x, g.ints("same", [0, 0, 0, 0, 0, 0, 1, 1])])
    x = g.node("Clip", [g.conv(x, 3, 16, stride=2, pads=[0, 0, 0, 0]), *six])
    y = g.node("Clip", [g.bn(g.conv(x, 16, 16, group=16), 16), *six])
    y = g.node("Add", [g.conv(y, 16, 16, k=1), x])
    nhwc = g.node("Transpose", [y], perm=[0, 2, 3, 1])
    pooled = g.node("ReduceMean", [nhwc], axes=[1, 2], keepdims=0)
    dense = g.node("MatMul", [pooled, g.w("dense_w", 16, CLASSES)])
    logits = g.node("Add", [dense, g.w("dense_b", CLASSES)])
    return g.save(path, "input_1", g.node("Softmax", [logits], axis=-1), opset=13, shape=[1, size, size, 3])


def upsample_concat(path, size: int = 16):
    """A strided branch brought back by Resize (nearest, x2) and concatenated on channels with the full-size one,
    darknet's LeakyRelu, global max pool as ReduceMax (keepdims), Flatten, Gemm, LogSoftmax (opset 13)."""
    g = Graph(17)
    x = g.node("LeakyRelu", [g.conv("data", 3, 8)], alpha=0.1)
    low = g.node("Relu", [g.conv(x, 8, 8, stride=2)])
    scales = g.w("scales", 4, value=[1, 1, 2, 2])
    up = g.node("Resize", [low, "", scales], mode="nearest")
    cat = g.node("Concat", [x, up], axis=1)
    pooled = g.node("ReduceMax", [g.node("Relu", [g.conv(cat, 16, 16)])], axes=[2, 3], keepdims=1)
    flat = g.node("Flatten", [pooled], axis=1)
    return g.save(path, "data", g.node("LogSoftmax", [g.gemm(flat, 16)], axis=1), opset=13, shape=[1, 3, size, size])


CORPUS = {
    "old-exporter": old_exporter,
    "shufflenet-v2": shufflenet_v2,
    "resnet-bottleneck": resnet_bottleneck,
    "inception": inception,
    "densenet": densenet,
    "squeeze-excite": squeeze_excite,
    "keras-tf2onnx": keras_tf2onnx,
    "upsample-concat": upsample_concat,
}
