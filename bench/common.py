"""Shared bits of the benchmarks: timing, the table, and the environment line."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch
import transformers

import qformer


def environment(device: torch.device) -> str:
    cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return (f"device: {name} | torch {torch.__version__} | transformers {transformers.__version__} | "
            f"qformer {qformer.__version__}")


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of `fn`, after warm-up; device events on CUDA, a synchronised clock elsewhere."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)
