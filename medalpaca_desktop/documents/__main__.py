"""`python -m medalpaca_desktop.documents ACTION ...`: the same jobs as `medalpaca docs` (see commands.py)."""

import sys

from medalpaca_desktop.documents.commands import main

sys.exit(main())
