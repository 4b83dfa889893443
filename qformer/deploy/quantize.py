"""Block-wise weight quantization of an ONNX graph's MatMuls, in llama.cpp's two common formats, run
by onnxruntime's `MatMulNBits`.

- `int8`: every block of 32 weights along the input dimension is `scale * q`, `q` in [-127, 127]
  (GGUF's Q8_0), stored as `q + 128` with an integer zero point of 128. onnxruntime has a fast 8-bit
  kernel only with activations quantized in blocks too (accuracy level 4): without it, a token of
  SmolLM2-135M took 134 ms instead of 11.
- `int4`: every block is `scale * q + minimum`, `q` in [0, 15] (GGUF's Q4_1), with float activations
  (level 0); the output head stays float. `MatMulNBits` takes only integer zero points, and a float
  one makes it dequantize on every call (83 ms a token), so the minimum is carried apart: the block
  sums of the input times the blocks' minima, one small MatMul, added to `MatMulNBits` with a zero
  point of 0 (13 ms a token).

A weight that already lies on such a grid (a GGUF model dequantized to float) is stored exactly, so
int4 computes with the very weights of the float graph: SmolLM2's Q4_1 GGUF decodes the same tokens.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
ACCURACY_LEVEL = {4: 0, 8: 4}  # float activations for int4; blocks of int8 activations for int8 (see above)
MS_DOMAIN = "com.microsoft"


def quantize_matmuls(graph, bits: int, head_columns: int | None = None) -> dict:
    """Replace, in place, every MatMul of the ONNX `graph` (a ModelProto) whose weight is a constant
    `(K, N)` initializer with K a multiple of 32. With `bits=4`, the MatMul with `head_columns`
    outputs (the vocabulary) stays float. MatMuls that read the same input (an attention layer's
    query, key and value; an MLP's gate and up) become one, split after: a decoding step runs a few
    hundred nodes less. Returns counts of what was done."""
    from onnx import helper, numpy_helper

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    initializers = {i.name: i for i in graph.graph.initializer}
    weights, kept_float = {}, 0  # a quantized MatMul's output name -> its (K, N) weight
    for node in graph.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        array = numpy_helper.to_array(weight) if weight is not None else None
        is_head = bits == 4 and array is not None and array.ndim == 2 and array.shape[1] == head_columns
        if array is None or array.ndim != 2 or array.shape[0] % BLOCK or array.dtype != np.float32 or is_head:
            kept_float += array is not None
            continue
        if not np.isfinite(array).all():
            raise ValueError(f"the weight of {node.name} holds NaN or infinity; this language "
                             f"model cannot be quantized")
        weights[node.output[0]] = array
    groups: dict[str, list] = {}  # input name -> the quantized MatMuls that read it, in graph order
    for node in graph.graph.node:
        if node.op_type == "MatMul" and node.output[0] in weights:
            groups.setdefault(node.input[0], []).append(node)
    nodes, done = [], set()
    for node in graph.graph.node:
        if node.op_type != "MatMul" or node.output[0] not in weights:
            nodes.append(node)
            continue
        if node.input[0] in done:
            continue  # joined into the first MatMul of its group
        done.add(node.input[0])
        members = groups[node.input[0]]
        joined = np.concatenate([weights[m.output[0]] for m in members], axis=1)
        output = node.output[0] if len(members) == 1 else f"{node.output[0]}_joined"
        new_nodes, tensors = blockwise_matmul(node.name, node.input[0], output, joined, bits)
        if len(members) > 1:
            sizes = f"{output}_split_sizes"
            tensors[sizes] = np.array([weights[m.output[0]].shape[1] for m in members], np.int64)
            new_nodes.append(helper.make_node("Split", [output, sizes], [m.output[0] for m in members],
                                              name=f"{node.name}_split", axis=-1))
        graph.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in tensors.items())
        nodes += new_nodes
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    used = {name for node in graph.graph.node for name in node.input}
    kept = [i for i in graph.graph.initializer if i.name in used]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in graph.opset_import):
        graph.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {f"int{bits}": len(weights), "kept_float": kept_float, "quantized_nodes": len(done)}


def blockwise_matmul(name: str, x: str, y: str, weight: np.ndarray, bits: int):
    """`y = x @ weight` for a constant `(K, N)` weight (K a multiple of 32) in `bits`-bit blocks: the
    nodes and their named tensors, for a graph written by hand (`deploy/llama_graph.py`)."""
    return (_int8 if bits == 8 else _int4)(name, x, y, weight)


def _blocks(weight: np.ndarray) -> np.ndarray:
    """`(K, N)` -> `(N, K / 32, 32)`: MatMulNBits' layout, blocks along the input dimension."""
    k, n = weight.shape
    return weight.T.reshape(n, k // BLOCK, BLOCK).astype(np.float64)


def _matmul_nbits(name: str, x: str, bits: int, k: int, n: int, names: list[str], output: str):
    from onnx import helper

    return helper.make_node("MatMulNBits", [x, *names], [output], name=f"{name}_int{bits}",
                            domain=MS_DOMAIN, K=k, N=n, bits=bits, block_size=BLOCK,
                            accuracy_level=ACCURACY_LEVEL[bits])


def _int8(name: str, x: str, y: str, weight: np.ndarray):
    k, n = weight.shape
    blocks = _blocks(weight)
    scale = np.abs(blocks).max(-1, keepdims=True) / 127
    scale[scale == 0] = 1
    q = (np.clip(np.rint(blocks / scale), -127, 127) + 128).astype(np.uint8)
    # named after the output, unique per node where a weight may be shared
    tensors = {f"{y}_int8": q, f"{y}_scales": scale.reshape(-1).astype(np.float32),
               f"{y}_zero_points": np.full(n * (k // BLOCK), 128, np.uint8)}
    return [_matmul_nbits(name, x, 8, k, n, list(tensors), y)], tensors


def _int4(name: str, x: str, y: str, weight: np.ndarray):
    from onnx import helper

    k, n = weight.shape
    blocks = _blocks(weight)
    low, high = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    scale = (high - low) / 15
    scale[scale == 0] = 1
    q = np.clip(np.rint((blocks - low) / scale), 0, 15).astype(np.uint8)
    per_row = k // BLOCK
    tensors = {f"{y}_int4": (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8),
               f"{y}_scales": scale.reshape(-1).astype(np.float32),
               f"{y}_zero_points": np.zeros(n * ((per_row + 1) // 2), np.uint8)}
    names = list(tensors)
    tensors |= {f"{y}_minima": low[..., 0].T.astype(np.float32),  # (K / 32, N)
                f"{y}_block_shape": np.array([-1, per_row, BLOCK], np.int64),
                f"{y}_last_axis": np.array([-1], np.int64)}
    nodes = [
        _matmul_nbits(name, x, 4, k, n, names, f"{y}_scaled"),
        helper.make_node("Reshape", [x, f"{y}_block_shape"], [f"{y}_input_blocks"]),
        helper.make_node("ReduceSum", [f"{y}_input_blocks", f"{y}_last_axis"], [f"{y}_block_sums"], keepdims=0),
        helper.make_node("MatMul", [f"{y}_block_sums", f"{y}_minima"], [f"{y}_offset_rows"]),
        helper.make_node("Shape", [f"{y}_scaled"], [f"{y}_shape"]),
        helper.make_node("Reshape", [f"{y}_offset_rows", f"{y}_shape"], [f"{y}_offset"]),
        helper.make_node("Add", [f"{y}_scaled", f"{y}_offset"], [y]),
    ]
    return nodes, tensors
