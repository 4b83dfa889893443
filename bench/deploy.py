"""Deployment paths on this machine, side by side in one run, the same inputs and threads for all:

- the default bridge's visual path (encoder -> Q-Former -> projection): torch fp32, ONNX Runtime
  fp32, and ONNX Runtime int8 (static QDQ quantization, calibrated on held-out drawings);
- the warm caption per image with each visual path (the language model is torch fp32 in all);
- the quality each keeps on held-out drawings (captions identical to torch fp32's, BLEU-4, CIDEr);
- the wildlife pipeline's classifiers (EfficientNet-Lite0 and Lite2): torch against ONNX Runtime.

    PYTHONPATH=.. python deploy.py [--drawings runs/corpus/eval-scenes.jsonl] [--limit 50]   (from bench/)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import environment
from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

import qformer
from qformer.deploy.export import export_onnx
from qformer.deploy.exported import VISUAL_GRAPH
from qformer.processing.images import load_image
from qformer.training.metrics import caption_scores
from qformer.vision.classifiers import LITE0, LITE2, ImageNetClassifier

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn, repeats: int = 10) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)


class Pixels(CalibrationDataReader):
    def __init__(self, batches: list[np.ndarray]):
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"pixel_values": batch}


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def main() -> None:
    ort.set_default_logger_severity(3)  # the quantizer's graphs leave unused constants it warns about, one line each
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", default=str(ROOT / "runs/corpus/eval-scenes.jsonl"))
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.drawings).read_text().splitlines()[: args.limit]]
    images = [load_image(str(Path(args.drawings).parent / r["image"])) for r in rows]
    references = {str(k): [r["text"]] for k, r in enumerate(rows)}
    model = qformer.create_model("bridge").eval()
    work = Path(tempfile.mkdtemp(prefix="qformer-deploy-"))
    export_onnx(model, work / "fp32")
    fp32 = work / "fp32" / VISUAL_GRAPH
    calibration = [model.load_images([i])[0].numpy() for i in images[-16:]]  # not the scored ones' order
    int8 = work / "int8.onnx"
    quantize_static(str(fp32), str(int8), Pixels(calibration), quant_format=ort.quantization.QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)

    one, _ = model.load_images(images[:1])
    eight, _ = model.load_images(images[:8])
    paths = {"torch fp32": None, "ONNX Runtime fp32": session(fp32), "ONNX Runtime int8 (QDQ)": session(int8)}
    table, baseline = [], None
    for name, runner in paths.items():
        def prompt(pixels, runner=runner):
            if runner is None:
                with torch.no_grad():
                    return model.visual_prompt(pixels)
            return torch.from_numpy(runner.run(None, {"pixel_values": pixels.numpy()})[0])

        model.onnx_visual = None if runner is None else (lambda pixels, runner=runner: prompt(pixels, runner))
        ms1, ms8 = median_ms(lambda: prompt(one)), median_ms(lambda: prompt(eight)) / 8
        error = 0.0 if baseline is None else float((prompt(eight) - baseline).abs().max())
        baseline = prompt(eight) if baseline is None else baseline
        caption_ms = median_ms(lambda: model.caption(images[:1], max_new_tokens=20), repeats=5)
        captions = [c for k in range(0, len(images), 8) for c in model.caption(images[k : k + 8], max_new_tokens=20)]
        reference_captions = captions if not table else table[0][-1]
        same = sum(a == b for a, b in zip(captions, reference_captions)) / len(captions)
        scores = caption_scores({str(k): c for k, c in enumerate(captions)}, references)
        table.append((name, ms1, ms8, error, caption_ms, same, scores["bleu4"], scores["cider"], captions))
    model.onnx_visual = None

    classifiers = []
    photos = [load_image(str(p)) for p in sorted((ROOT / "samples").glob("*.jpg"))] * 3
    for name, weights in (LITE0, LITE2):
        classifier = ImageNetClassifier(name, weights)
        pixels = classifier._pixels(photos).contiguous()
        path = work / f"{name}.onnx"
        torch.onnx.export(classifier.model, (pixels[:1],), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}}, opset_version=18, dynamo=False)
        runner = session(path)
        with torch.no_grad():
            torch_ms = median_ms(lambda: classifier.model(pixels), repeats=5)
            exported = torch.from_numpy(runner.run(None, {"x": pixels.numpy()})[0])
            difference = float((exported - classifier.model(pixels)).abs().max())
        onnx_ms = median_ms(lambda: runner.run(None, {"x": pixels.numpy()}), repeats=5)
        classifiers.append((name, len(photos) / torch_ms * 1e3, len(photos) / onnx_ms * 1e3, difference))

    print(environment(torch.device("cpu")) + f" | onnxruntime {ort.__version__}")
    print(f"visual path of the default bridge; quality on the first {len(rows)} of {Path(args.drawings).name}\n")
    print("| visual path | ms, 1 image | ms per image, batch 8 | max abs diff vs torch | warm caption, s | captions = "
          "torch fp32's | BLEU-4 | CIDEr |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ms1, ms8, error, caption_ms, same, bleu, cider, _ in table:
        print(f"| {name} | {ms1:.1f} | {ms8:.1f} | {error:.1e} | {caption_ms / 1e3:.3f} | {same:.2f} | "
              f"{bleu:.3f} | {cider:.3f} |")
    print(f"\n| classifier ({len(photos)} photos, one batch) | torch images/s | ONNX Runtime "
          f"images/s | max abs logit diff |")
    print("|---|---:|---:|---:|")
    for name, torch_rate, onnx_rate, difference in classifiers:
        print(f"| {name} | {torch_rate:.1f} | {onnx_rate:.1f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
