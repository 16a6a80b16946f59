"""Benchmarks behind ``disco bench``: each module runs one benchmark and writes its results.

- `overhead`: what the scheduler itself costs (TTFT, per token, CPU, memory, 500 streams).
- `sim`: every dispatch policy on a trace, at every budget, against the hindsight oracle.
- `live`: the simulator against the real local model and the loopback remote, per policy.
"""
