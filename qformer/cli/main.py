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

from ..bridge.factory import check_model_name
from ..extras import MissingExtra, require
from ..files import UnreadableFileError
from ..processing.prompts import check_question
from .args import build_parser
from .common import EXIT_BAD_INPUT, EXIT_USAGE, device_named, images_named, message, printable, refused
from .wildlife import run_wildlife

__all__ = ["EXIT_BAD_INPUT", "EXIT_USAGE", "main", "printable"]

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "qformer"
    try:
        if argv[:1] == ["train"]:  # training has its own parser (recipe, key=value overrides)
            require("datasets", "qformer train")
            from ..training.__main__ import main as train

            return train(argv[1:])
        return _run(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        print("qformer: interrupted", file=sys.stderr)
        return 130
    except MissingExtra as e:
        print(f"qformer: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the last word to a user is a sentence, not a traceback
        # BaseException too: a native library's panic (tokenizers' Rust code) is not an Exception
        if os.environ.get("QFORMER_DEBUG"):
            raise
        print(f"qformer: {command} failed: {type(e).__name__}: {printable(str(e))}\n"
              "Set QFORMER_DEBUG=1 to see where, and please report it if the input was valid.", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    import qformer  # after parsing, so `--help` and usage errors answer at once

    if args.command == "models":
        from qformer.grounded.loading import PATH_NOTES

        lines = [f"{name}  ({note})" for name, note in PATH_NOTES.items()]
        print("\n".join(lines + [name for name in qformer.list_models() if name not in PATH_NOTES]))
        return 0
    if args.command == "convert":
        return _convert(args)
    if args.command == "export":
        return _export(args)
    if args.command == "wildlife":
        return run_wildlife(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        require("gradio", "qformer demo")
        from ..demo.app import launch

        launch(args.host, args.port, args.model, allowed_models=args.models)
        return 0
    images = images_named(args.images)  # a mistyped path is told at once, before any model loads
    if isinstance(images, int):
        return images
    if args.command == "ask":
        try:
            check_question(args.question)
        except ValueError as e:
            return refused(e, EXIT_USAGE)
    known = _load(lambda: check_model_name(args.model), args.model)  # a typo is told before torch loads
    if known is not None:
        return known
    if _runs_without_torch(args):
        from ..grounded.loading import load_exported

        model = _load(lambda: load_exported(args.model), args.model)
    else:
        device = device_named(args.device)
        if device is None:
            return EXIT_USAGE
        from qformer.grounded import load_captioner

        quantize = args.quantize or ("none" if args.num_beams > 1 else None)  # the onnxruntime LM decodes greedily
        model = _load(lambda: load_captioner(args.model, device, quantize=quantize), args.model)
    if isinstance(model, int):
        return model
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    try:
        if args.command == "caption":
            answers = model.caption(images, prompt=args.prompt, return_exceptions=True, **generation)
            records = [{"image": i, "caption": a} for i, a in zip(images, answers)]
        else:
            answers = model.ask(images, args.question, return_exceptions=True, **generation)
            records = [{"image": i, "question": args.question, "answer": a} for i, a in zip(images, answers)]
    except UnreadableFileError as e:  # a model file a native library could not use
        return refused(e, EXIT_BAD_INPUT)
    except ValueError as e:  # an empty or overlong question
        return refused(e, EXIT_USAGE)
    return _report(records, args.json)


def _runs_without_torch(args: argparse.Namespace) -> bool:
    """An exported folder whose graphs all run on onnxruntime, asked for greedy answers on the CPU:
    no torch to import (`qformer.deploy.lite`), so the command starts in about a second."""
    from pathlib import Path

    if args.num_beams != 1 or args.quantize is not None or args.device not in ("auto", "cpu"):
        return False
    if not Path(args.model).is_dir():
        return False
    from ..deploy.lite import LiteCaptioner

    return LiteCaptioner.unsupported(args.model) is None


def _serve(args: argparse.Namespace) -> int:
    if args.engine == "bentoml":
        if args.replicas != 1:
            print("qformer: --replicas is for --engine ray; BentoML's workers are set in its "
                  "config (bentofile.yaml, BENTOML_CONFIG)", file=sys.stderr)
            return EXIT_USAGE
        require("bentoml", "qformer serve --engine bentoml")
        from ..serving.run import serve_with_bentoml

        serve_with_bentoml(args.host, args.port, args.model, args.max_batch, args.ensemble)  # it takes over
    require("ray", "qformer serve")
    from ..serving.run import serve_locally

    serve_locally(args.host, args.port, args.model, args.replicas, args.max_batch, ensemble=args.ensemble)
    return 0


def _convert(args: argparse.Namespace) -> int:
    import qformer
    from qformer.bridge.convert import convert_from_transformers, convert_to_transformers

    try:
        if args.from_transformers:
            convert_from_transformers(args.from_transformers, args.out)
        else:
            from qformer.grounded.loading import bridge_of

            convert_to_transformers(qformer.create_model(bridge_of(args.to_transformers)), args.out)
    except (KeyError, OSError, ValueError) as e:
        print(f"qformer: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}")
    return 0


def _load(load, name: str):
    """The loaded model, or the exit code after saying why it could not be loaded."""
    from qformer.config import ConfigError

    try:
        return load()
    except (KeyError, ConfigError) as e:
        print(f"qformer: cannot load model {name!r}: {message(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as e:  # a missing, damaged or refused file
        print(f"qformer: cannot load model {name!r}: {message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import qformer
    from qformer.bridge.factory import CAPTIONERS, SHIPPED_BRIDGE
    from qformer.deploy.export import export_onnx

    if args.model == "grounded":
        print("qformer: the grounded captioner has no bridge to export: it runs without torch as it is "
              "(qformer caption --model grounded); export 'default' or a bridge", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.onnx)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        print(f"qformer: {printable(args.onnx)} already exists and is not an empty folder; pass --overwrite to "
              "replace it, or choose another folder", file=sys.stderr)  # said before the model loads
        return EXIT_USAGE
    known = _load(lambda: check_model_name(args.model), args.model)
    if known is not None:
        return known
    overrides = {"lm": {"quantize": args.quantize}} if args.quantize else {}
    bridge = SHIPPED_BRIDGE if args.model in CAPTIONERS else args.model
    model = _load(lambda: qformer.create_model(bridge, **overrides).eval(), args.model)
    if isinstance(model, int):
        return model
    captioner = "default" if args.model == "default" else "bridge"
    try:
        manifest = export_onnx(model, args.onnx, overwrite=args.overwrite, captioner=captioner)
    except (FileExistsError, ValueError) as e:
        return refused(e, EXIT_USAGE)
    visual, lm = manifest["visual_prompt"], manifest["language_model"]
    if lm["engine"] == "onnxruntime":
        weights = f"{lm['quantize']} weights" if lm["quantize"] else "float32 weights"
        lm_line = f"the language model runs on onnxruntime from {lm['folder']}/ ({weights})"
    else:
        lm_line = f"the language model runs in torch: {lm['why']}"
    print(f"wrote {printable(args.onnx)}: {visual['file']} (largest difference from torch "
          f"{visual['max_abs_error_vs_torch']:.1e}); {lm_line}")
    if captioner == "default":
        print(f"qformer caption --model {printable(args.onnx)} answers as the default: photos by the grounded "
              "captioner, drawings by this bridge")
    return 0


def _report(records: list[dict], as_json: bool) -> int:
    failed = 0
    for record in records:
        value_key = "caption" if "caption" in record else "answer"
        if isinstance(record[value_key], Exception):
            print(f"qformer: {printable(str(record[value_key]))}", file=sys.stderr)
            record["error"] = record.pop(value_key).reason
            failed += 1
        else:  # the text, which path gave it, and the facts a grounded answer came from
            found = record.pop(value_key)
            record.update({value_key: found.text, "source": found.source},
                          **({"facts": found.facts.to_dict()} if found.facts else {}))
    if as_json:  # JSON escapes control characters itself
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            if "error" not in record:
                print(printable(f"{record['image']}: {record.get('caption', record.get('answer'))}"))
    return EXIT_BAD_INPUT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
