"""`qformer train RECIPE [key=value ...] [--resume | --overwrite]`, also `python -m qformer.training ...` and
`accelerate launch -m qformer.training ...` (several processes)."""

from __future__ import annotations

import argparse
import sys

from qformer.config import ConfigError

from .recipe import load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qformer train", description=__doc__)
    parser.add_argument("recipe", help="a recipe file in configs/train/ (YAML or JSON)")
    parser.add_argument("overrides", nargs="*", help="key=value, dotted keys: optim.lr=3e-4 data.batch_size=16")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--overwrite", action="store_true", help="start afresh over an earlier run in output_dir")
    parser.add_argument("--resume-other-recipe", action="store_true",
                        help="with --resume: continue a checkpoint saved by a different recipe, on purpose")
    args = parser.parse_args(argv)
    try:
        config = load_recipe(args.recipe, args.overrides)
    except ConfigError as e:
        print(f"qformer train: {e}", file=sys.stderr)
        return 2
    from .checkpoints import NoCompleteCheckpoint, ResumeError
    from .loop import BadStepsError, train

    try:
        train(config, resume=args.resume, overwrite=args.overwrite, resume_other_recipe=args.resume_other_recipe)
    except (NoCompleteCheckpoint, BadStepsError, OSError) as e:  # damaged files, unreadable data
        print(f"qformer train: {e}", file=sys.stderr)
        return 1
    except (ResumeError, ConfigError) as e:  # a resume of another run, a bad recipe
        print(f"qformer train: {e}", file=sys.stderr)
        return 2
    except KeyError as e:  # a model name that is no preset, folder or hub id
        print(f"qformer train: model {config.model!r}: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except ValueError as e:  # unreadable data (DataError), a damaged file, a model that won't load
        print(f"qformer train: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"qformer train: out of memory with data.batch_size={config.data.batch_size}; lower it (and raise "
              "optim.grad_accumulation to keep the effective batch)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
