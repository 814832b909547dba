"""`python -m lnl ...` is the same as the `lnl` command."""

from lnl.cli import main

raise SystemExit(main())
