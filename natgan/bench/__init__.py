"""Measuring models: throughput (official protocol and larger batches), memory, FLOPs, training step.

>>> from natgan.bench import BenchSettings, benchmark, measure_generator
>>> benchmark(["stylenat", "styleswin"], BenchSettings(batches=(1, 8), precision="bf16"))
>>> measure_generator(G, BenchSettings(batches=(1,), warmup=2, rounds=5))
"""

from natgan.bench.flops import FlopReport, count_flops, na_flops
from natgan.bench.listing import model_table
from natgan.bench.measure import (ATTN_BACKENDS, COMPILE_MODES, PRECISIONS, BenchSettings, benchmark,
                                  benchmark_model, machine, measure_generator, measure_train_step, resolve_device)
from natgan.bench.memory import MemoryReport, PeakMemory
from natgan.model_choice import resolve_config, resolve_model
from natgan.bench.timing import Timing, time_calls

__all__ = ["ATTN_BACKENDS", "COMPILE_MODES", "PRECISIONS", "BenchSettings", "FlopReport", "MemoryReport",
           "PeakMemory", "Timing", "benchmark", "benchmark_model", "count_flops", "machine", "measure_generator",
           "measure_train_step", "model_table", "na_flops", "resolve_config", "resolve_device", "resolve_model",
           "time_calls"]
