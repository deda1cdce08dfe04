"""carelake's benchmark: every stage timed on 1x, 10x and 100x data, beside two baselines.

``python -m infra.bench`` scales the bundled sample (or given inputs) with the data scaler, then
measures each stage in a child process: seconds, MB/s, resources/s, items/s and peak memory, and
how each cost grows with size. See docs/benchmarks.md for the figures and how to read them.
"""
