"""The `qformer` command's arguments: every subcommand, its flags, and the bounds each number must keep."""

from __future__ import annotations

import argparse

from .. import __version__
from ..config import LM_QUANTIZE
from ..extras import DISTRIBUTION
from ..processing.prompts import DEFAULT_MAX_NEW_TOKENS, MAX_BEAMS, MAX_NEW_TOKENS

QUANTIZE_HELP = ("run the bridge's language model on onnxruntime with block-wise int8 or int4 weights "
                 "(built once, then cached)")


def positive_int(text: str, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
    return value


def at_most(high: int):
    """A whole number from 1 to `high`: the bounds of what one command may ask for."""
    return lambda text: positive_int(text, high)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qformer", description="Captions, answers and wildlife reports for "
                                     "images, from a Q-Former between a frozen image encoder and a frozen LM.")
    parser.add_argument("--version", action="version", version=f"qformer {__version__} ({DISTRIBUTION} on PyPI)")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="default",
                        help="'default' (photos to the grounded captioner, drawings to the shipped bridge), 'bridge' "
                             "or 'grounded' (each path alone), or any preset (see `qformer models`), folder or hub id")
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    common.add_argument("--json", action="store_true", help="print a JSON list instead of text lines")
    common.add_argument("--max-new-tokens", type=at_most(MAX_NEW_TOKENS), default=DEFAULT_MAX_NEW_TOKENS)
    common.add_argument("--num-beams", type=at_most(MAX_BEAMS), default=1)
    common.add_argument("--quantize", choices=("none", *LM_QUANTIZE),
                        help=QUANTIZE_HELP + "; 'none' keeps it in torch (default: int4 for the default's bridge on a "
                             "CPU, when decoding is greedy)")

    caption = commands.add_parser("caption", parents=[common], help="caption images")
    caption.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    caption.add_argument("--prompt", default=None, help="text the caption continues (default: the model's own)")

    ask = commands.add_parser("ask", parents=[common], help="answer a question about images")
    ask.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    ask.add_argument("question", help="the question, in quotes, last")

    convert = commands.add_parser("convert", help="convert to or from transformers' BLIP-2 layout")
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-transformers", metavar="SRC",
                           help="a Blip2ForConditionalGeneration hub id or folder")
    direction.add_argument("--to-transformers", metavar="SRC", help="a qformer model: preset, folder or hub id")
    convert.add_argument("--out", required=True, help="folder to write")

    export = commands.add_parser("export", help="export a bridge's visual path to ONNX (runs on onnxruntime)")
    export.add_argument("--onnx", required=True, metavar="OUT_DIR", help="folder to write")
    export.add_argument("--model", default="default",
                        help="'default' (its bridge, recorded as the drawing path, so the folder routes photos as "
                        "`qformer caption` does), 'bridge' (the shipped bridge alone), or a preset, folder or hub id")
    export.add_argument("--overwrite", action="store_true", help="replace the files already in OUT_DIR")
    export.add_argument("--quantize", choices=LM_QUANTIZE, help=QUANTIZE_HELP)

    wildlife = commands.add_parser("wildlife", help="find, name and describe the animals in photos")
    wildlife.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    wildlife.add_argument("--out", help="write MegaDetector-format JSON here (batch mode, resumable)")
    wildlife.add_argument("--resume", action="store_true",
                          help="continue an interrupted --out run, or add new images to finished results")
    wildlife.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    wildlife.add_argument("--country", help="ISO 3166-1 alpha-3 code, e.g. KEN: species not known there roll up")
    wildlife.add_argument("--workers", type=at_most(64), default=2, help="threads decoding images")
    wildlife.add_argument("--batch-size", type=at_most(256), default=8)
    wildlife.add_argument("--checkpoint-every", type=positive_int, default=50, help="images between checkpoints")
    wildlife.add_argument("--threshold", type=fraction, default=0.5, help="species score below which answers roll up")
    wildlife.add_argument("--expert", action="append", default=[], metavar="GROUP=FOLDER",
                          help="use a head trained by `python -m qformer.training.expert` for a group, "
                               "e.g. bird=runs/birds")
    wildlife.add_argument("--device", default="auto")
    wildlife.add_argument("--engine", choices=("auto", "torch", "onnx", "ray", "local"), default="auto",
                          help="torch, or onnx (onnxruntime, no torch) in this process (or torchrun's); auto "
                               "(or local): torch where it is installed; ray: Ray Data over a pool of actors")
    wildlife.add_argument("--actors", type=positive_int, default=2, help="Ray Data actors, each with its own models")
    wildlife.add_argument("--llm-summary", action="store_true", help="add a sentence by SmolLM2 for each image")

    serve = commands.add_parser("serve", help="serve captions, answers and wildlife reports over HTTP (Ray Serve)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", default="default", help="the captioner: default, bridge, grounded or a bridge")
    serve.add_argument("--replicas", type=positive_int, default=1, help="replicas of each model deployment")
    serve.add_argument("--max-batch", type=at_most(256), default=8,
                       help="requests a model takes in one adaptive batch (1: batching off)")
    serve.add_argument("--engine", choices=("ray", "bentoml"), default="ray",
                       help="Ray Serve (scales to a cluster) or BentoML (packages as a container with bentofile.yaml)")
    serve.add_argument("--ensemble", action="store_true",
                       help="also serve the caption ensemble graph (three decodings, scored, ranked) "
                            "at POST /ensemble/")

    demo = commands.add_parser("demo", help="start the web demo (Gradio)")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--model", default="default", help="the caption tab's first model")
    demo.add_argument("--models", nargs="*", default=[], metavar="DIR",
                      help="model folders visitors may choose besides the presets (nothing else is loaded)")

    commands.add_parser("train", help="train a bridge: qformer train RECIPE [key=value ...] [--resume]")
    commands.add_parser("models", help="list the model presets")
    return parser
