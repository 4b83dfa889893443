"""A small helper for ONNX graphs written by hand from numpy weights (`deploy/llama_graph.py`,
`deploy/qformer_graph.py`): each call adds one node and returns its output's name."""

from __future__ import annotations

import itertools

import numpy as np

from ..extras import require


class GraphBuilder:
    def __init__(self, purpose: str):
        self.onnx = require("onnx", purpose)
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self._ids = [], [], itertools.count()
        self._constants: dict[tuple, str] = {}
        self.counts: dict[str, int] = {}  # what `projections` made: block-wise and float weights, nodes

    def const(self, value, name: str | None = None) -> str:
        """A weight or constant; small constants of equal value are stored once."""
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 16 and name is None else None
        if key in self._constants:
            return self._constants[key]
        name = name or f"const_{next(self._ids)}"
        self.initializers.append(self.numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def __call__(self, op: str, *inputs: str, out: str | None = None, **attributes) -> str:
        return self.many(op, *inputs, outputs=[out or f"{op.lower()}_{next(self._ids)}"], **attributes)[0]

    def many(self, op: str, *inputs: str, outputs: int | list[str], **attributes) -> list[str]:
        """A node with several outputs (a Split)."""
        if isinstance(outputs, int):
            outputs = [f"{op.lower()}_{next(self._ids)}" for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op, list(inputs), outputs, name=f"n{next(self._ids)}_{op}",
                                                **attributes))
        return outputs

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """`x @ weight.T + bias` for a torch-layout `(out, in)` weight, in float."""
        (y,) = self.projections(x, [weight])
        return self("Add", y, self.const(bias.astype(np.float32)))

    def projections(self, x: str, weights: list[np.ndarray], bits: int | None = None) -> list[str]:
        """`x @ w.T` for each torch-layout `(out, in)` weight of `weights`, all reading `x`: one MatMul,
        split after. With `bits` (4 or 8), block-wise weights on `MatMulNBits` (`deploy/quantize.py`),
        made here, so that a large model never holds its float weights all at once."""
        from .quantize import BLOCK, blockwise_matmul

        joined = np.concatenate([w.T for w in weights], axis=1).astype(np.float32)  # (in, sum of outs)
        y = f"matmul_{next(self._ids)}"
        if bits is None or joined.shape[0] % BLOCK:
            self("MatMul", x, self.const(joined), out=y)
            self.count("kept_float", len(weights))
        else:
            nodes, tensors = blockwise_matmul(f"n{next(self._ids)}", x, y, joined, bits)
            self.nodes += nodes
            self.initializers += [self.numpy_helper.from_array(value, name) for name, value in tensors.items()]
            self.count(f"int{bits}", len(weights))
            self.count("quantized_nodes", 1)
        if len(weights) == 1:
            return [y]
        return self.many("Split", y, self.const(np.array([w.shape[0] for w in weights], np.int64)),
                         outputs=len(weights), axis=-1)

    def count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def model(self, name: str, inputs: list, outputs: list, opset: int, extra_domains: tuple[str, ...] = (),
              check: bool = True):
        """The ModelProto, checked by onnx unless `check=False`; inputs and outputs as (name, elem type,
        shape). The builder is spent: its weights are moved into the model, not held twice."""
        helper, tensor = self.helper, self.onnx.TensorProto
        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info(n, getattr(tensor, t), s) for n, t, s in inputs],
                                  [helper.make_tensor_value_info(n, getattr(tensor, t), s) for n, t, s in outputs])
        self.initializers.reverse()
        while self.initializers:  # moved one at a time: never two copies of all the weights at once
            graph.initializer.append(self.initializers.pop())
        opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_domains)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="qformer")
        if check:
            self.onnx.checker.check_model(model)
        return model
