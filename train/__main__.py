"""`python -m train RECIPE [key=value ...] [--resume]`, also `accelerate launch -m train ...` and `qformer train`."""

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
    args = parser.parse_args(argv)
    try:
        config = load_recipe(args.recipe, args.overrides)
    except ConfigError as e:
        print(f"qformer train: {e}", file=sys.stderr)
        return 2
    from .loop import BadStepsError, train

    try:
        train(config, resume=args.resume)
    except (BadStepsError, FileNotFoundError, ValueError) as e:
        print(f"qformer train: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
