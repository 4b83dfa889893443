"""Opening ONNX graphs on onnxruntime's CPU provider, with one sentence when a graph will not load."""

from __future__ import annotations

from pathlib import Path

from ..extras import require


def open_session(graph: Path | bytes, threads: int | None = None, remedy: str = "export the model again",
                 spin: bool = True, arena: bool = True):
    """An onnxruntime CPU session for a graph file (or a graph built in memory, as bytes); `remedy` ends
    the sentence when it will not load.
    From its path, not its bytes (a second copy of the weights in memory): onnxruntime itself refuses
    external data that lies outside the graph's folder, symbolic links included (tests/test_onnx_lm.py
    checks it). `spin=False` for a graph whose runs alternate with other graphs' (a detector and
    classifiers on each photo): its idle threads would otherwise spin on the cores the next graph
    needs, which made the default's warm photo caption 1.5x slower on two cores (bench/spinning.py).
    `arena=False` for graphs run on batches of changing shapes: onnxruntime's memory arena keeps
    every buffer it ever grew to."""
    ort = require("onnxruntime", "running ONNX graphs")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = arena
    try:
        source = graph if isinstance(graph, bytes) else str(graph)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime's own error types; the user gets one sentence
        where = "the graph built in memory" if isinstance(graph, bytes) else graph
        raise ValueError(f"{where}: onnxruntime cannot load this graph ({str(e).strip()[:300]}); it is left as it "
                         f"is: {remedy}") from e


def save_for_loading(graph: Path, weights: str) -> None:
    """Rewrite the graph file `graph` as onnxruntime loads it fastest: its extended graph optimizations
    (fusions such as FusedMatMul; no layout changes, which would tie it to this CPU) done once here
    instead of at every load, and its weights moved into the file `weights` beside it, which
    onnxruntime maps instead of parsing and copying them out of the graph. For the 200 MB int4 SmolLM2
    step this halves its load (0.78 s to 0.38 s on a 2-core CPU). The result is still an ONNX graph
    (onnxruntime's contrib ops, as MatMulNBits already is)."""
    ort = require("onnxruntime", "writing ONNX graphs for onnxruntime")
    staged = graph.with_name(f".{graph.name}.optimized")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(staged)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    staged.replace(graph)
    (graph.parent / weights).touch()  # a graph without large weights gets none: the file is there all the same
