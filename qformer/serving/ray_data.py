"""The wildlife pipeline over Ray Data, for folders too big for one process: files become a dataset,
detection and classification run as `map_batches` over a pool of actors (N CPU actors, or one per
GPU), and the results come back to the same resumable batch run as the in-process engine
(`qformer wildlife DIR --engine ray --out results.json`).
"""

from __future__ import annotations

import json
from typing import Sequence

from ..wildlife.results import ImageResult


class _PipelineActor:
    """One actor: its own WildlifePipeline, called on batches of file names."""

    def __init__(self, options: dict):
        from ..wildlife import WildlifePipeline

        self.pipeline = WildlifePipeline.default(**options)

    def __call__(self, batch: dict) -> dict:
        files = [str(f) for f in batch["file"]]
        from ..wildlife.batch import describe_run

        results = self.pipeline(files)
        run = json.dumps(describe_run(self.pipeline))  # what the results file says of its models
        return {"file": files, "result": [json.dumps(r.to_dict()) for r in results], "run": [run] * len(files)}


def _describe(options: dict) -> list:
    from ..wildlife import WildlifePipeline
    from ..wildlife.batch import describe_run

    return list(describe_run(WildlifePipeline.default(**options)))


class RayWildlife:
    """Callable like a `WildlifePipeline` on file names: `RayWildlife(actors=2)(files)`.
    `options` go to `WildlifePipeline.default` in every actor."""

    chunk_size = 256  # files handed to Ray Data at a time: the batch run checkpoints between them

    def __init__(self, actors: int = 2, batch_size: int = 8, gpus_per_actor: float = 0.0, **options):
        options["batch_size"] = batch_size
        import ray

        if not ray.is_initialized():
            from .run import start_ray

            start_ray()
        self.actors, self.batch_size, self.gpus, self.options = actors, batch_size, gpus_per_actor, options
        self._description = None

    def __call__(self, files: Sequence[str], workers: int = 1) -> list[ImageResult]:
        import ray

        if not files:
            return []
        dataset = ray.data.from_items([{"file": str(f)} for f in files])
        # an actor per share of the machine; each holds its models for the whole run
        mapped = dataset.map_batches(_PipelineActor, fn_constructor_kwargs={"options": self.options},
                                     batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=self.actors),
                                     num_gpus=self.gpus,
                                     num_cpus=0.5 if not self.gpus else 0)
        rows = mapped.take_all()
        self._description = self._description or tuple(json.loads(rows[0]["run"]))
        by_file = {row["file"]: ImageResult.from_dict(json.loads(row["result"])) for row in rows}
        return [by_file[str(f)] for f in files]

    def describe_run(self) -> tuple:
        if self._description is None:  # every file was done before this run: ask a one-off task
            import ray

            self._description = tuple(ray.get(ray.remote(num_cpus=0.5)(_describe).remote(self.options)))
        return self._description
