"""Benchmarks behind ``disco bench``: each module runs one benchmark and writes its results.

- `overhead`: what the scheduler itself costs (TTFT, per token, CPU, memory, 500 streams).
"""
