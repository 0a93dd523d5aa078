"""The Benchmark tab: set up USMLE evaluations, run them as worker jobs, read the results.

It drives the `bench` engine only through its config file and command, and reads
results back through the engine's light modules (results, stats, reference).
"""
