"""Any `qformer.compose.Graph` on Ray Serve, without rewriting its nodes.

Every `Node` becomes a deployment of its own (`NodeServer`) with its own `ray_actor_options`
(`num_cpus`, `num_gpus`), replicas or `autoscaling_config`, and `max_ongoing_requests`, or nodes
declared as a group share one: one set of replicas, whose processes hold the models the group's
nodes share once (the caption ensemble's six nodes share one bridge). A node that declares a
`batch_size` takes requests in adaptive batches (`@serve.batch`, at most that many). The
graph's shape (`Chain`, `Parallel`, `Route`, `Switch`) runs in a driver deployment, where each node
is replaced by a call through its `DeploymentHandle`: the inputs of one request go out at once, and
`Parallel` branches run concurrently, as in process.

A node's function is pickled into its replicas: give a node a function of a module (or a class
whose `__call__` loads its model on first use), not a loaded model, so each replica loads its own.

    app = deploy_graph(graph, options={"generate": {"ray_actor_options": {"num_gpus": 1}}})
    serve.run(app)   # then: await handle.remote([{"image": ...}]) -> list of result dicts
"""

# no `from __future__ import annotations`: Ray Serve reads the batch method's signature
import asyncio
import copy
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from ..compose.graph import Graph, Node, State, Step
from .metrics import record_batch, record_latency
from .run import keep_replica_on_loopback

NODE_DEFAULTS = {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 32}
BATCH_WAIT_S = 0.01


def use_the_machines_cores() -> None:
    """Ray gives an actor as many threads as CPUs it reserved (one, for half a CPU); the models share
    this machine's cores as an in-process run would."""
    import os

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@serve.deployment(graceful_shutdown_timeout_s=5)
class NodeServer:
    """The functions of a group of nodes (often one) behind a deployment: `call(name, arguments)` ->
    that node's output."""

    def __init__(self, nodes: list[Node]):
        keep_replica_on_loopback()
        use_the_machines_cores()
        self.nodes = {node.name: node for node in nodes}
        self.call_batched.set_max_batch_size(max(node.batch_size or 1 for node in nodes))
        self.call_batched.set_batch_wait_timeout_s(BATCH_WAIT_S)

    async def call(self, name: str, arguments: list) -> Any:
        node = self.nodes[name]
        if node.batch_size is not None:
            return await self.call_batched(name, arguments)
        start = time.perf_counter()
        output = await asyncio.to_thread(node.fn, *arguments)
        record_latency(name, time.perf_counter() - start)
        return output

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=BATCH_WAIT_S)
    async def call_batched(self, names: list, requests: list) -> list:
        # a batch may hold requests for several nodes of the group: each node runs on its own
        results: list = [None] * len(requests)
        for name in dict.fromkeys(names):
            node, rows = self.nodes[name], [i for i, n in enumerate(names) if n == name]
            for begin in range(0, len(rows), node.batch_size):
                chunk = rows[begin : begin + node.batch_size]
                start = time.perf_counter()
                columns = [list(column) for column in zip(*(requests[i] for i in chunk))]
                produced = await asyncio.to_thread(node.fn, *columns)
                record_batch(name, len(chunk))
                record_latency(name, time.perf_counter() - start)
                for i, value in zip(chunk, zip(*produced) if len(node.outputs) > 1 else produced):
                    results[i] = value
        return results


class RemoteNode(Node):
    """A node whose function runs in its deployment: one request per input, all sent at once."""

    def __init__(self, node: Node, handle: DeploymentHandle):
        super().__init__(node.name, node.fn, node.inputs, node.outputs)
        self.handle = handle

    def run(self, states: list[State], timings: list[dict[str, float]]) -> None:
        start = time.perf_counter()
        responses = [self.handle.call.remote(self.name, self._arguments(s)) for s in states]
        for state, response in zip(states, responses):
            self._store(state, response.result())
        share = (time.perf_counter() - start) / max(len(states), 1)
        for timing in timings:
            timing[self.name] = timing.get(self.name, 0.0) + share


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, graceful_shutdown_timeout_s=5)
class GraphDriver:
    """The graph's shape, with every node a call to its deployment; `remote(inputs)` -> results."""

    def __init__(self, root: Step, **handles: DeploymentHandle):
        keep_replica_on_loopback()
        self.graph = Graph(_remote(root, handles))

    async def __call__(self, inputs: list[State]) -> list[dict]:
        # the graph blocks on its handles' responses: run it off the event loop
        results = await asyncio.to_thread(self.graph.map, inputs)
        return [{"values": r.values, "timings": r.timings} for r in results]


def nodes_of(step: Step) -> list[Node]:
    """Every node of a step tree, in the order they appear."""
    if isinstance(step, Node):
        return [step]
    return [node for child in _children(step) for node in nodes_of(child)]


def deploy_graph(graph: Graph, options: dict[str, dict] | None = None, driver_options: dict | None = None,
                 groups: dict[str, list[str]] | None = None):
    """The Serve application for `graph`: a `NodeServer` per node, or per declared group of nodes
    (`groups`: group name -> node names), with options by node or group name over `NODE_DEFAULTS`,
    and a `GraphDriver` that runs the graph's shape over them."""
    options, groups = options or {}, groups or {}
    nodes = nodes_of(graph.root)
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"node names must be unique to become deployments; {names} repeats some")
    members = {node: group for group, listed in groups.items() for node in listed}
    grouped = [node for listed in groups.values() for node in listed]
    problems = sorted(set(grouped) - set(names)) or sorted({n for n in grouped if grouped.count(n) > 1})
    if problems or set(groups) & set(names) or any(not listed for listed in groups.values()):
        raise ValueError(f"groups must name each node of this graph ({names}) at most once, each group at least one, "
                         f"and no group may share a node's name; check {problems or sorted(groups)}")
    deployments: dict[str, list[Node]] = {}
    for node in nodes:
        deployments.setdefault(members.get(node.name, node.name), []).append(node)
    unknown = sorted(set(options) - set(deployments))
    if unknown:
        raise ValueError(f"options name {unknown}, which are neither nodes nor groups here ({sorted(deployments)})")
    handles = {}
    for name, grouped_nodes in deployments.items():
        settings = {**NODE_DEFAULTS, **options.get(name, {})}
        server = NodeServer.options(name=_deployment_name(name), **settings).bind(grouped_nodes)
        for node in grouped_nodes:
            handles[_deployment_name(node.name)] = server
    return GraphDriver.options(**(driver_options or {})).bind(graph.root, **handles)


def _deployment_name(node_name: str) -> str:
    return "node_" + "".join(c if c.isalnum() else "_" for c in node_name)


def _children(step: Step) -> list[Step]:
    for attribute in ("steps", "branches"):
        children = getattr(step, attribute, None)
        if children is not None:
            return list(children.values()) if isinstance(children, dict) else list(children)
    if hasattr(step, "cheap"):
        return [step.cheap, step.strong]
    return []


def _remote(step: Step, handles: dict[str, DeploymentHandle]) -> Step:
    """A copy of the step tree with every node replaced by a call to its deployment."""
    if isinstance(step, Node):
        return RemoteNode(step, handles[_deployment_name(step.name)])
    remote = copy.copy(step)
    if hasattr(step, "steps"):
        remote.steps = tuple(_remote(s, handles) for s in step.steps)
    elif isinstance(getattr(step, "branches", None), dict):
        remote.branches = {k: _remote(s, handles) for k, s in step.branches.items()}
    elif hasattr(step, "branches"):
        remote.branches = [_remote(s, handles) for s in step.branches]
    elif hasattr(step, "cheap"):
        remote.cheap, remote.strong = _remote(step.cheap, handles), _remote(step.strong, handles)
    return remote
