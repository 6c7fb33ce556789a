"""ONNX files written the way other tools write them (no edgecnn export, nothing downloaded): a Caffe2-era
model-zoo classifier (IR 3, opset 9, initializers listed as inputs, LRN/BatchNormalization/Dropout/Softmax),
a Keras model through tf2onnx (NHWC input, dynamic batch, Transpose at the input, Relu6 as Clip, ReduceMean
pooling, MatMul head, Softmax), a SqueezeNet-style fully convolutional one (N x K x 1 x 1 output), a
TFLite-style one taking uint8 NHWC pixels, one with dynamic H and W, and a torchvision-style ResNet
defined here (PyTorch modules from the user's code)."""

import numpy as np
import onnx
import torch
from onnx import TensorProto as T
from onnx import helper, numpy_helper


class Weights:
    """Initializers with fixed random values (He-scaled, so activations keep their range)."""

    def __init__(self, seed: int = 0):
        self.rng, self.tensors = np.random.default_rng(seed), {}

    def __call__(self, name: str, *shape, value=None) -> str:
        if value is None:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) if len(shape) > 1 else \
                self.rng.uniform(-0.1, 0.1, shape)
        self.tensors[name] = numpy_helper.from_array(np.asarray(value, np.float32), name)
        return name


def conv(w: Weights, x: str, name: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1) -> list:
    return [helper.make_node("Conv", [x, w(f"{name}_w", cout, cin // group, k, k), w(f"{name}_b", cout)], [name],
                             name=name, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2, group=group)]


def caffe_zoo(path, *, opset: int = 9, size: int = 32, classes: int = 10, ir: int = 3):
    """CaffeNet/AlexNet-style, as the old model zoo's caffe2 exports: IR 3, every initializer also a graph input,
    input 'data_0' [1, 3, size, size], LRN, BatchNormalization, Dropout, Gemm head, output 'prob_1' (Softmax)."""
    w = Weights(1)
    bn = [w("bn_scale", 32, value=np.linspace(0.5, 1.5, 32)), w("bn_bias", 32), w("bn_mean", 32),
          w("bn_var", 32, value=np.linspace(0.5, 2.0, 32))]
    nodes = [*conv(w, "data_0", "conv1", 3, 16), helper.make_node("Relu", ["conv1"], ["relu1"]),
             helper.make_node("LRN", ["relu1"], ["norm1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
             helper.make_node("MaxPool", ["norm1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
             *conv(w, "pool1", "conv2", 16, 32),
             helper.make_node("BatchNormalization", ["conv2", *bn], ["bn2"], epsilon=1e-5),
             helper.make_node("Relu", ["bn2"], ["relu2"]),
             helper.make_node("MaxPool", ["relu2"], ["pool2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool2"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", w("fc6_w", 64, 32 * (size // 4) ** 2), w("fc6_b", 64)], ["fc6"], transB=1),
             helper.make_node("Relu", ["fc6"], ["relu6"]),
             helper.make_node("Dropout", ["relu6"], ["drop6"], ratio=0.5),
             helper.make_node("Gemm", ["drop6", w("fc8_w", classes, 64), w("fc8_b", classes)], ["fc8"], transB=1),
             helper.make_node("Softmax", ["fc8"], ["prob_1"], axis=1)]
    inputs = [helper.make_tensor_value_info("data_0", T.FLOAT, [1, 3, size, size]),
              *(helper.make_tensor_value_info(n, T.FLOAT, list(t.dims)) for n, t in w.tensors.items())]
    graph = helper.make_graph(nodes, "caffenet", inputs, [helper.make_tensor_value_info("prob_1", T.FLOAT, [1, classes])],
                              list(w.tensors.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2")
    model.ir_version = ir
    onnx.save(model, str(path))
    return path


def keras_nhwc(path, *, size: int = 32, classes: int = 10):
    """A Keras MobileNet-like model through tf2onnx: input 'input_1' [unk__n, size, size, 3] (NHWC, dynamic
    batch), Transpose to NCHW, Relu6 as Clip, a depthwise conv, Transpose back, ReduceMean over H, W, MatMul +
    Add, Softmax; opset 13, IR 7."""
    w = Weights(2)
    six = [w("clip_min", value=np.float32(0)), w("clip_max", value=np.float32(6))]
    nodes = [helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
             *conv(w, "nchw", "conv1", 3, 16, stride=2), helper.make_node("Clip", ["conv1", *six], ["relu1"]),
             *conv(w, "relu1", "dw2", 16, 16, group=16), helper.make_node("Clip", ["dw2", *six], ["relu2"]),
             *conv(w, "relu2", "pw2", 16, 32, k=1), helper.make_node("Clip", ["pw2", *six], ["relu3"]),
             helper.make_node("Transpose", ["relu3"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("ReduceMean", ["nhwc"], ["pooled"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["pooled", w("dense_w", 32, classes, value=np.random.default_rng(3)
                                                     .standard_normal((32, classes)) * 0.3)], ["dense"]),
             helper.make_node("Add", ["dense", w("dense_b", classes)], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["dense_1"], axis=-1)]
    graph = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("input_1", T.FLOAT, ["unk__n", size, size, 3])],
                              [helper.make_tensor_value_info("dense_1", T.FLOAT, ["unk__n", classes])], list(w.tensors.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def squeezenet_like(path, *, size: int = 32, classes: int = 10, opset: int = 12):
    """SqueezeNet-style: a fire module (squeeze 1x1, expand 1x1 and 3x3, Concat), a 1x1 conv to the classes,
    GlobalAveragePool: output 'pool10' [1, classes, 1, 1] (no Softmax)."""
    w = Weights(4)
    nodes = [*conv(w, "data", "conv1", 3, 16, stride=2), helper.make_node("Relu", ["conv1"], ["r1"]),
             *conv(w, "r1", "squeeze", 16, 8, k=1), helper.make_node("Relu", ["squeeze"], ["s"]),
             *conv(w, "s", "expand1", 8, 16, k=1), *conv(w, "s", "expand3", 8, 16),
             helper.make_node("Concat", ["expand1", "expand3"], ["fire"], axis=1),
             helper.make_node("Relu", ["fire"], ["f"]),
             *conv(w, "f", "conv10", 32, classes, k=1), helper.make_node("Relu", ["conv10"], ["r10"]),
             helper.make_node("GlobalAveragePool", ["r10"], ["pool10"])]
    graph = helper.make_graph(nodes, "squeezenet", [helper.make_tensor_value_info("data", T.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("pool10", T.FLOAT, [1, classes, 1, 1])],
                              list(w.tensors.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def uint8_nhwc(path, *, size: int = 32, classes: int = 5):
    """TFLite-style: uint8 pixels [1, size, size, 3] in, Cast, x / 127.5 - 1 inside the graph, then a conv net."""
    w = Weights(5)
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=T.FLOAT),
             helper.make_node("Mul", ["f", w("inv", value=np.float32(1 / 127.5))], ["scaled"]),
             helper.make_node("Sub", ["scaled", w("one", value=np.float32(1))], ["centered"]),
             helper.make_node("Transpose", ["centered"], ["nchw"], perm=[0, 3, 1, 2]),
             *conv(w, "nchw", "conv1", 3, 8, stride=2), helper.make_node("Relu", ["conv1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", w("fc_w", classes, 8), w("fc_b", classes)], ["scores"], transB=1)]
    graph = helper.make_graph(nodes, "tflite", [helper.make_tensor_value_info("image", T.UINT8, [1, size, size, 3])],
                              [helper.make_tensor_value_info("scores", T.FLOAT, [1, classes])], list(w.tensors.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def dynamic_hw(path, *, classes: int = 6):
    """Fully convolutional up to a global pool: input [N, 3, H, W] with every dimension but C dynamic."""
    w = Weights(6)
    nodes = [*conv(w, "x", "c1", 3, 8), helper.make_node("Relu", ["c1"], ["r1"]),
             *conv(w, "r1", "c2", 8, 16, stride=2), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", w("fc_w", classes, 16), w("fc_b", classes)], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "fcn", [helper.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["N", classes])], list(w.tensors.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def upsampling_opset9(path, *, size: int = 32, classes: int = 4):
    """Old-opset forms TVM's frontend misreads (measured: Upsample 7-9 computed wrong, Slice 1-9 refused): a
    stride-2 branch brought back by Upsample (linear) and added to the full-size one, channels cut by Slice."""
    w = Weights(7)
    nodes = [*conv(w, "input", "c1", 3, 8), helper.make_node("Relu", ["c1"], ["r1"]),
             *conv(w, "r1", "c2", 8, 8, stride=2), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Upsample", ["r2", w("scales", 4, value=[1, 1, 2, 2])], ["up"], mode="linear"),
             helper.make_node("Add", ["r1", "up"], ["sum"]),
             helper.make_node("Slice", ["sum"], ["half"], starts=[0], ends=[4], axes=[1]),
             helper.make_node("GlobalAveragePool", ["half"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", w("fc_w", classes, 4), w("fc_b", classes)], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "fpn", [helper.make_tensor_value_info("input", T.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", T.FLOAT, [1, classes])], list(w.tensors.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), str(path))
    return path


class BasicBlock(torch.nn.Module):
    """torchvision's ResNet BasicBlock, written out as a user's code would."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                           nn.BatchNorm2d(cout))

    def forward(self, img):
        out = torch.relu(self.bn1(self.conv1(img)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (img if self.down is None else self.down(img)))


class TinyResNet(torch.nn.Module):
    """A torchvision-style ResNet (stem, two stages of BasicBlocks, global pool, fc), random BatchNorm
    statistics so folding shows."""

    def __init__(self, classes: int = 5, width: int = 8):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1, self.layer2 = BasicBlock(width, width), BasicBlock(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, classes)
        gen = torch.Generator().manual_seed(0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)

    def forward(self, img):
        x = self.layer2(self.layer1(self.stem(img)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def make_tiny_resnet(classes: int = 5, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyResNet(classes, width)


def image_folder(root, classes: list[str], *, n: int = 6, size: int = 32, seed: int = 0):
    """root/<class>/<i>.png: RGB images whose colour depends on the class (PNG files made here)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            img[..., k % 3] += np.uint8(100 + 20 * (k // 3))
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root
