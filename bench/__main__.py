"""`python -m bench run CONFIG.yaml` (benchmarks are not available yet)."""

import sys

print("bench: benchmarks are not available yet in this version.", file=sys.stderr)
raise SystemExit(3)
