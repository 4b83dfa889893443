"""ONNX export of the visual path: vision encoder -> Q-Former -> projection, one graph with a dynamic
batch, which turns pixels into the language model's soft prompt. `create_model(folder)` then runs
it on onnxruntime.

The folder is a normal saved bridge (config.json, model.safetensors) plus `visual_prompt.onnx`,
`onnx.json`, which records the graph's SHA-256 and which engine runs the language model, and, for a
causal LM that exports, `language_model/`: the LM with its KV cache on onnxruntime (`deploy/onnx_lm.py`),
named by the saved config as `lm.onnx = "./language_model"`. An LM that does not export stays in
torch, and the manifest says why.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..extras import require
from ..files import sha256_of, with_default_mode, write_text_atomically
from .exported import CAPTIONERS, LM_FOLDER, MANIFEST, VISUAL_GRAPH, file_hashes

OPSET = 18
MAX_EXPORT_BATCH = 1024  # the graph's batch is dynamic up to this
PARITY = 1e-4  # the export is checked against torch before it is kept


class VisualPromptGraph(nn.Module):
    """pixels (B, 3, H, W) -> visual prompt (B, Q, D_lm), in float32."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.model.vision(pixels)
        return nn.functional.linear(self.model.query_outputs(tokens).float(), self.model.projection.weight.float(),
                                    self.model.projection.bias.float())


def export_onnx(model, out_dir: str | Path, overwrite: bool = False, captioner: str = "bridge") -> dict:
    """Write the bridge and its visual graph to `out_dir`; return the manifest. Nothing is written
    unless the graph matches torch within `PARITY` on a random batch of two. `captioner="default"`
    records the bridge as the routed default's drawing path: loaded by the CLI (with or without
    torch), the folder then sends photos to the grounded captioner, as `qformer caption` does."""
    if captioner not in CAPTIONERS:
        raise ValueError(f"captioner must be one of {CAPTIONERS}, got {captioner!r}")
    ort = require("onnxruntime", "ONNX export")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds files; pass --overwrite to replace them, or choose another folder")
    if model.projection is None:
        raise ValueError("this bridge has no language model, so it has no visual prompt to export")
    preprocess = model.vision.preprocessor
    if not hasattr(preprocess, "size"):
        raise ValueError(f"{type(model.vision).__name__} takes several inputs per image; only "
                         f"one-tensor encoders export")
    was_training = model.training
    graph = VisualPromptGraph(model).eval()
    pixels = torch.randn(2, 3, preprocess.size, preprocess.size)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staged = Path(tmp) / "export"
        model.save_pretrained(staged)
        try:
            require("onnxscript", "ONNX export (torch's exporter writes graphs with it)")
            batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on its own progress
                torch.onnx.export(graph, (pixels,), str(staged / VISUAL_GRAPH), input_names=["pixel_values"],
                                  output_names=["visual_prompt"], opset_version=OPSET, dynamo=True,
                                  external_data=False, dynamic_shapes={"pixels": {0: batch}}, verbose=False)
            with torch.no_grad():
                expected = graph.eval()(pixels)
        finally:
            model.train(was_training)  # the wrapper's eval() and the exporter reach the model's modules
        session = ort.InferenceSession(str(staged / VISUAL_GRAPH), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"pixel_values": pixels.numpy()})[0])
        error = float((got - expected).abs().max())
        if error > PARITY:
            raise RuntimeError(f"the exported graph differs from torch by {error:.2e} (more "
                               f"than {PARITY}); not written")
        manifest = {
            "captioner": captioner,
            "preprocess": dataclasses.asdict(preprocess),  # what the graph's pixels need (qformer.deploy.lite)
            "visual_prompt": {"file": VISUAL_GRAPH, "sha256": sha256_of(staged / VISUAL_GRAPH), "opset": OPSET,
                              "max_abs_error_vs_torch": error},
            "language_model": _export_language_model(model, staged),
        }
        manifest["files"] = file_hashes(staged)  # after the LM's export, which changes config.json
        write_text_atomically(staged / MANIFEST, json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    return manifest


def _export_language_model(model, staged: Path) -> dict:
    """Put the LM's engine folder beside the visual graph and name it in the saved config; or say why
    the LM stays in torch."""
    from .onnx_lm import export_causal_lm

    lm = model.lm
    folder = staged / LM_FOLDER
    if lm.engine is not None:  # already on onnxruntime (lm.quantize): its engine is the export
        shutil.copytree(lm.engine.folder, folder)
        for path in folder.rglob("*"):  # an engine cached by an older version may hold owner-only files
            if path.is_file():
                with_default_mode(path)
        entry = lm.engine.manifest
    elif lm.kind != "causal":
        return {"engine": "torch", "why": f"a {lm.kind} language model does not export with a KV cache here"}
    else:
        from ..lm.tokenizers import BUILTIN_BYTE_TOKENIZER

        builtin = BUILTIN_BYTE_TOKENIZER if lm.config.tokenizer == BUILTIN_BYTE_TOKENIZER else None
        was_training = lm.model.training
        try:
            entry = export_causal_lm(lm.model, lm.tokenizer, folder, None, builtin)
        except ValueError as e:
            shutil.rmtree(folder, ignore_errors=True)
            return {"engine": "torch", "why": str(e)}
        finally:
            lm.model.train(was_training)
    config_path = staged / "config.json"
    config = json.loads(config_path.read_text())
    config["lm"]["onnx"] = f"./{LM_FOLDER}"
    write_text_atomically(config_path, json.dumps(config, indent=2))
    return {"engine": "onnxruntime", "folder": LM_FOLDER, "quantize": entry.get("quantize"),
            "max_abs_logit_error_vs_torch": entry.get("max_abs_logit_error_vs_torch")}
