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

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None, name: str | None = None) -> str:
        """`x @ weight.T + bias` for a torch-layout `(out, in)` weight: a MatMul on a constant `(in, out)`
        initializer, the form `deploy/quantize.py` turns into block-wise weights."""
        y = self("MatMul", x, self.const(np.ascontiguousarray(weight.T, dtype=np.float32),
                                         name and f"{name}.weight"))
        return y if bias is None else self("Add", y, self.const(bias.astype(np.float32), name and f"{name}.bias"))

    def model(self, name: str, inputs: list, outputs: list, opset: int, extra_domains: tuple[str, ...] = ()):
        """The checked ModelProto; inputs and outputs as (name, elem type, shape)."""
        helper, tensor = self.helper, self.onnx.TensorProto
        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info(n, getattr(tensor, t), s) for n, t, s in inputs],
                                  [helper.make_tensor_value_info(n, getattr(tensor, t), s) for n, t, s in outputs],
                                  self.initializers)
        opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_domains)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="qformer")
        self.onnx.checker.check_model(model)
        return model
