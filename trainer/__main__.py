"""`python -m trainer run CONFIG.yaml` (fine-tuning is not available yet)."""

import sys

print("trainer: fine-tuning is not available yet in this version.", file=sys.stderr)
raise SystemExit(3)
