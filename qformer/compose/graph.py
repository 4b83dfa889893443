"""A small inference graph: nodes that read and write named values, run in sequence, in parallel
branches whose outputs are aggregated, routed by confidence from a cheap model to a strong one, or
switched to one branch by a signal.

Every run works on a list of states (one dict of named values per input), so a node that declares a
`batch_size` sees its inputs in batches while the others see one state at a time. Each result carries
the seconds every node took for it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

State = dict[str, Any]


@dataclass
class Result:
    values: State
    timings: dict[str, float] = field(default_factory=dict)  # node name -> seconds spent on this input

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


class Step:
    name: str

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        """Compute this step's outputs into every state, and add its seconds to `timings`."""
        raise NotImplementedError

    def mermaid(self, lines: list[str]) -> tuple[list[str], list[str]]:
        """Append this step's Mermaid lines; return the ids where it is entered and left."""
        ident = _ident(self.name)
        lines.append(f'    {ident}["{self.name}"]')
        return [ident], [ident]


class Node(Step):
    """`fn(*inputs)` returns the output (or a tuple, one per output name). With `batch_size`, fn
    takes lists and returns lists instead. With `device`, a module is moved there once and tensor
    inputs are moved there before each call."""

    def __init__(self, name: str, fn: Callable, inputs: Sequence[str], outputs: Sequence[str] | str,
                 batch_size: int | None = None, device: Any = None):
        self.name, self.fn, self.inputs = name, fn, tuple(inputs)
        self.outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"node {name!r}: batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.device = batch_size, device
        if device is not None:
            import torch  # a device is torch's: only then is torch needed

            if isinstance(fn, torch.nn.Module):
                fn.to(device)

    def _arguments(self, state: State) -> list[Any]:
        missing = [k for k in self.inputs if k not in state]
        if missing:
            raise KeyError(f"node {self.name!r} needs {missing}, but the state holds only {sorted(state)}")
        values = [state[k] for k in self.inputs]
        if self.device is not None:
            import torch

            values = [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in values]
        return values

    def _store(self, state: State, produced: Any) -> None:
        produced = produced if len(self.outputs) > 1 else (produced,)
        if len(produced) != len(self.outputs):
            raise ValueError(f"node {self.name!r} returned {len(produced)} values for outputs {self.outputs}")
        state.update(zip(self.outputs, produced))

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        if self.batch_size is None:
            for state, timing in zip(states, timings):
                start = time.perf_counter()
                self._store(state, self.fn(*self._arguments(state)))
                timing[self.name] = timing.get(self.name, 0.0) + time.perf_counter() - start
            return
        for first in range(0, len(states), self.batch_size):
            chunk = states[first : first + self.batch_size]
            start = time.perf_counter()
            columns = list(zip(*(self._arguments(s) for s in chunk)))
            produced = self.fn(*(list(c) for c in columns))
            rows = zip(*produced) if len(self.outputs) > 1 else ((p,) for p in produced)
            for state, row in zip(chunk, rows):
                self._store(state, row if len(self.outputs) > 1 else row[0])
            share = (time.perf_counter() - start) / len(chunk)  # a batch's time, shared by its inputs
            for timing in timings[first : first + self.batch_size]:
                timing[self.name] = timing.get(self.name, 0.0) + share


class Chain(Step):
    """Steps one after another; each sees what the earlier ones wrote."""

    def __init__(self, name: str, *steps: Step):
        self.name, self.steps = name, steps

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        for step in self.steps:
            step.run(states, timings)

    def mermaid(self, lines: list[str]) -> tuple[list[str], list[str]]:
        entry, previous = None, None
        for step in self.steps:
            first, last = step.mermaid(lines)
            if previous is not None:
                lines.extend(f"    {a} --> {b}" for a in previous for b in first)
            entry, previous = entry or first, last
        return entry or [], previous or []


class Parallel(Step):
    """Branches run at once (threads) on copies of each state; the value each branch leaves under
    `collect` is gathered into a list, and `aggregate(list)` is stored as `output`."""

    def __init__(self, name: str, branches: Sequence[Step], collect: str, output: str,
                 aggregate: Callable[[list[Any]], Any] = list, max_workers: int | None = None):
        if not branches:
            raise ValueError(f"parallel step {name!r} needs at least one branch")
        self.name, self.branches, self.collect, self.output = name, list(branches), collect, output
        self.aggregate, self.max_workers = aggregate, max_workers or len(branches)

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        copies = [[dict(s) for s in states] for _ in self.branches]
        branch_timings = [[{} for _ in states] for _ in self.branches]
        with ThreadPoolExecutor(self.max_workers) as pool:
            futures = [pool.submit(b.run, c, t) for b, c, t in zip(self.branches, copies, branch_timings)]
            for future in futures:
                future.result()  # re-raises a branch's error here
        for i, (state, timing) in enumerate(zip(states, timings)):
            start = time.perf_counter()
            state[self.output] = self.aggregate([copy[i][self.collect] for copy in copies])
            for branch in branch_timings:
                timing.update(branch[i])
            timing[self.name] = time.perf_counter() - start

    def mermaid(self, lines: list[str]) -> tuple[list[str], list[str]]:
        ident = _ident(self.name)
        lines.append(f'    {ident}{{{{"{self.name}"}}}}')
        entries = []
        for branch in self.branches:
            first, last = branch.mermaid(lines)
            entries += first
            lines.extend(f"    {a} --> {ident}" for a in last)
        return entries, [ident]


class Route(Step):
    """Confidence routing: `cheap` runs on every input; `strong` runs only where `confident(state)`
    is false. `routed_to` records which answered."""

    def __init__(self, name: str, cheap: Step, strong: Step, confident: Callable[[State], bool]):
        self.name, self.cheap, self.strong, self.confident = name, cheap, strong, confident

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        self.cheap.run(states, timings)
        unsure = [i for i, s in enumerate(states) if not self.confident(s)]
        for i, state in enumerate(states):
            state["routed_to"] = self.strong.name if i in unsure else self.cheap.name
        if unsure:
            self.strong.run([states[i] for i in unsure], [timings[i] for i in unsure])

    def mermaid(self, lines: list[str]) -> tuple[list[str], list[str]]:
        cheap_in, cheap_out = self.cheap.mermaid(lines)
        strong_in, strong_out = self.strong.mermaid(lines)
        lines.extend(f"    {a} -. unsure .-> {b}" for a in cheap_out for b in strong_in)
        return cheap_in, cheap_out + strong_out


class Switch(Step):
    """Routing by a signal computed beforehand: `choose(state)` names the branch each input takes, and
    only that branch runs on it (a domain router, where `Route` tries the cheap model first). The
    branch's name is recorded under `routed_to`."""

    def __init__(self, name: str, choose: Callable[[State], str], branches: dict[str, Step]):
        if not branches:
            raise ValueError(f"switch {name!r} needs at least one branch")
        self.name, self.choose, self.branches = name, choose, dict(branches)

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        chosen = [self.choose(state) for state in states]
        unknown = sorted(set(chosen) - set(self.branches))
        if unknown:
            raise KeyError(f"switch {self.name!r} chose {unknown}; its branches are {sorted(self.branches)}")
        for state, branch in zip(states, chosen):
            state["routed_to"] = branch
        for branch, step in self.branches.items():
            members = [i for i, c in enumerate(chosen) if c == branch]
            if members:
                step.run([states[i] for i in members], [timings[i] for i in members])

    def mermaid(self, lines: list[str]) -> tuple[list[str], list[str]]:
        ident = _ident(self.name)
        lines.append(f'    {ident}{{"{self.name}"}}')
        exits = []
        for branch, step in self.branches.items():
            first, last = step.mermaid(lines)
            lines.extend(f"    {ident} -- {branch} --> {b}" for b in first)
            exits += last
        return [ident], exits


class Graph:
    """The runnable whole: `graph(x=...)` for one input, `graph.map([{...}, ...])` for many."""

    def __init__(self, root: Step):
        self.root = root

    def __call__(self, **inputs: Any) -> Result:
        return self.map([inputs])[0]

    def map(self, inputs: Sequence[State]) -> list[Result]:
        states = [dict(i) for i in inputs]
        timings: list[dict[str, float]] = [{} for _ in states]
        self.root.run(states, timings)
        return [Result(s, t) for s, t in zip(states, timings)]

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        self.root.mermaid(lines)
        return "\n".join(lines)


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
