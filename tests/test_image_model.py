"""edgecnn.data.image_model, edgecnn.data.preprocess and the opset conversion: what edgecnn reads from an ONNX
made elsewhere, and the one-line errors for what it does not take."""

import numpy as np
import onnx
import pytest
from conftest import run_cli
from foreign_models import caffe_zoo, dynamic_hw, keras_nhwc, squeezenet_like, uint8_nhwc
from onnx import TensorProto as T
from onnx import helper

from edgecnn.core import onnx_utils
from edgecnn.data import image_model
from edgecnn.core.errors import EdgecnnError
from edgecnn.data import preprocess


def facts(path, **given):
    return image_model.describe(onnx_utils.load(path), path, given)


def test_zoo_model_initializer_inputs_are_weights(tmp_path):
    f = facts(caffe_zoo(tmp_path / "caffenet.onnx"))
    assert f["input"] | {"mean": None} == {"name": "data_0", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW",
                                           "mean": None, "std": [1.0], "scale": 1 / 255, "channel_order": "rgb"}
    assert f["outputs"] == [{"name": "prob_1", "shape": [1, 10], "classes": 10, "scores": "probabilities"}]
    assert f["changes"] == ["12 initializers listed as inputs are weights (IR 3 -> 4)"]
    prepared, _ = image_model.prepare(onnx_utils.load(tmp_path / "caffenet.onnx"), f["input"])
    assert [i.name for i in prepared.graph.input] == ["data_0"] and prepared.ir_version == 4
    onnx.checker.check_model(prepared, full_check=True)


def test_layouts_dtypes_and_class_outputs(tmp_path):
    keras = facts(keras_nhwc(tmp_path / "keras.onnx"))["input"]
    assert (keras["layout"], keras["shape"], keras["dtype"]) == ("NHWC", ["unk__n", 32, 32, 3], "float32")
    u8 = facts(uint8_nhwc(tmp_path / "u8.onnx"))["input"]
    assert (u8["layout"], u8["dtype"]) == ("NHWC", "uint8") and "mean" not in u8
    squeeze = facts(squeezenet_like(tmp_path / "sq.onnx"))["outputs"]
    assert squeeze == [{"name": "pool10", "shape": [1, 10, 1, 1], "classes": 10, "scores": "logits"}]
    assert facts(tmp_path / "keras.onnx", layout="NCHW")["input"]["layout"] == "NCHW"  # what the user says wins


def test_dynamic_dims_need_an_input_shape(tmp_path):
    path = dynamic_hw(tmp_path / "fcn.onnx")
    with pytest.raises(EdgecnnError, match=r"input 'x' has dynamic dimensions \['N', 3, 'H', 'W'\]: fix them with "
                                           r"--input-shape 1x3x224x224"):
        facts(path)
    assert facts(path, input_shape="Nx3x40x48")["input"]["shape"] == ["N", 3, 40, 48]
    assert facts(path, input_shape="x:1x3x40x40")["input"]["shape"] == ["N", 3, 40, 40]  # the batch: --batch
    with pytest.raises(EdgecnnError, match="names input 'data'; the model's input is 'x'"):
        facts(path, input_shape="data:1x3x40x40")
    with pytest.raises(EdgecnnError, match="only its dynamic dimensions can be set"):
        facts(path, input_shape="1x4x40x40")
    with pytest.raises(EdgecnnError, match="give the image input's four dimensions"):
        image_model.parse_shape("224x224")


def not_an_image_model(path, inputs):
    node = helper.make_node("Identity", [inputs[0].name], ["y"])
    out = onnx.ValueInfoProto()
    out.CopyFrom(inputs[0])
    out.name = "y"
    graph = helper.make_graph([node], "g", inputs, [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("case,message", [
    ("two_inputs", r"the model has 2 inputs: image \(float32 \[1, 3, 8, 8\]\), mask \(float32 \[1, 8\]\); edgecnn "
                   "takes image models: one image input"),
    ("tokens", r"input tokens \(non-image \['batch', 128\]\) is not an image batch; edgecnn takes image models"),
])
def test_not_an_image_model_is_one_line_error(tmp_path, case, message):
    inputs = {"two_inputs": [helper.make_tensor_value_info("image", T.FLOAT, [1, 3, 8, 8]),
                             helper.make_tensor_value_info("mask", T.FLOAT, [1, 8])],
              "tokens": [helper.make_tensor_value_info("tokens", T.INT64, ["batch", 128])]}[case]
    path = not_an_image_model(tmp_path / "m.onnx", inputs)
    r = run_cli("compile", path, "--target", "onnxruntime-cpu", "--out", tmp_path / "b")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert __import__("re").search(message, r.stderr), r.stderr
    assert not (tmp_path / "b").exists()


def test_preprocessing_given_once_labels_and_yaml_beside(tmp_path):
    path = caffe_zoo(tmp_path / "caffenet.onnx")
    (tmp_path / "classes.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    (tmp_path / "caffenet.yaml").write_text("mean: [103.94, 116.78, 123.68]\nscale: 1\nchannel_order: bgr\n"
                                            "labels: classes.txt\n")
    f = facts(path)
    assert (f["input"]["mean"], f["input"]["std"], f["input"]["scale"], f["input"]["channel_order"]) == \
        ([103.94, 116.78, 123.68], [1.0], 1.0, "bgr")
    assert f["labels"] == [f"class {i}" for i in range(10)]
    assert facts(path, std=[58.4], channel_order="rgb")["input"]["std"] == [58.4]  # flags over the YAML
    (tmp_path / "caffenet.yaml").write_text("labels: [a, b]\n")
    with pytest.raises(EdgecnnError, match="2 labels for 10 classes \\(output 'prob_1'\\)"):
        facts(path)
    (tmp_path / "caffenet.yaml").write_text("means: [0.5]\n")
    with pytest.raises(EdgecnnError, match="unknown key 'means' \\(did you mean 'mean'\\?\\)"):
        facts(path)
    (tmp_path / "caffenet.yaml").unlink()
    with pytest.raises(EdgecnnError, match="--mean \\[0.1, 0.2\\]: the model takes 3-channel images: give 1 or 3 values"):
        facts(path, mean=[0.1, 0.2])
    with pytest.raises(EdgecnnError, match="takes uint8 pixels and normalizes them itself: drop --mean"):
        facts(uint8_nhwc(tmp_path / "u8.onnx"), mean=[0.5])


def test_preprocess_applies_the_section():
    pixels = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 10
    spec = {"shape": [2, 2, 2, 3], "layout": "NHWC", "dtype": "float32", "mean": [1.0], "std": [1.0],
            "scale": "1/127.5", "channel_order": "bgr"}
    x = preprocess.preprocess(pixels, spec)
    want = (pixels[:, ::-1].astype(np.float32) / 127.5 - 1.0).transpose(0, 2, 3, 1)
    assert x.shape == (2, 2, 2, 3) and x.dtype == np.float32 and np.allclose(x, want, atol=1e-6)
    assert preprocess.geometry(spec) == (3, 2, 2)
    u8 = preprocess.preprocess(pixels, {**spec, "dtype": "uint8"})
    assert u8.dtype == np.uint8 and (u8 == pixels[:, ::-1].transpose(0, 2, 3, 1)).all()
    ours = {"shape": [3, 2, 2], "mean": [0.2], "std": [0.3], "scale": "x / 255"}  # a checkpoint's own section
    assert np.array_equal(preprocess.preprocess(pixels, ours), (pixels.astype(np.float32) / 255.0 - np.float32(0.2))
                          / np.float32(0.3))
    assert preprocess.class_scores(np.zeros((4, 7, 1, 1))).shape == (4, 7)
    with pytest.raises(EdgecnnError, match="not class scores"):
        preprocess.class_scores(np.zeros((4, 7, 2, 2)))


def test_opset_conversion_names_the_op_that_blocks_it():
    """onnx's converter has no Identity 16 -> 13 adapter: the error names the node, not only the assertion."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["r"], name="gate"), helper.make_node("Identity", ["r"], ["y"], name="keep")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(EdgecnnError, match=r"cannot convert the model from opset 18 to 13 at Identity \(node 'keep'\): "
                                           r"No Adapter From Version \$16 for Identity"):
        onnx_utils.convert_opset(model, 13)
    assert onnx_utils.opset_of(onnx_utils.convert_opset(model, 16)) == 16


def test_upsample_keeps_its_meaning_through_the_converter(tmp_path):
    """onnx's Resize 10 -> 11 adapter drops Upsample's coordinates (1.3 off on this input): kept, and checked."""
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="linear")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, None)], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    up = onnx_utils.convert_opset(model, 13)  # raises when the outputs change (onnx_utils.same_outputs)
    resize = next(n for n in up.graph.node if n.op_type == "Resize")
    assert {a.name: helper.get_attribute_value(a) for a in resize.attribute}["coordinate_transformation_mode"] == \
        b"asymmetric"


def test_a_one_channel_model_asks_for_one_value(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "grey.onnx"))
    with pytest.raises(EdgecnnError, match=r"^--mean \[1.0, 2.0\]: the model takes 1-channel images: give 1 value$"):
        facts(tmp_path / "grey.onnx", mean=[1.0, 2.0])
