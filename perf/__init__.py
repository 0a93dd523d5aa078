"""Side-by-side performance benchmarks (run by hand, never timed assertions in tests)."""
