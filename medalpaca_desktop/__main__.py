"""`python -m medalpaca_desktop` is the `medalpaca` command."""

from medalpaca_desktop.cli import main

raise SystemExit(main())
