"""Run `qformer train` or `qformer wildlife` in this process and SIGKILL it at a chosen point.

The fault injection the resume tests need, kept out of the library: it patches the run from outside.

    python tests/interrupt.py train STEP RECIPE [key=value ...]      killed once training reaches STEP
    python tests/interrupt.py wildlife IMAGES IMG_OR_DIR... --out F  killed after a checkpoint holding IMAGES
"""

import os
import signal
import sys


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    what, at, *argv = sys.argv[1:]
    at = int(at)
    if what == "train":
        import qformer.training.loop as loop

        class KilledAtStep(loop.tqdm):  # the loop ticks its progress bar once per finished step
            def update(self, n: int = 1) -> None:
                super().update(n)
                if self.n >= at:
                    kill()

        loop.tqdm = KilledAtStep
        from qformer.training.__main__ import main as train

        return train(argv)
    if what == "wildlife":
        import qformer.wildlife.batch as batch

        write_json = batch.write_json

        def write_then_die(data: dict, path) -> None:
            write_json(data, path)
            if len(data.get("done", ())) >= at:
                kill()

        batch.write_json = write_then_die
        from qformer.cli.main import main as cli

        return cli(["wildlife", *argv])
    raise SystemExit(f"unknown command {what!r}")


if __name__ == "__main__":
    sys.exit(main())
