"""``python -m ehrprog.cli``."""

from ehrprog.cli.parser import main

raise SystemExit(main())
