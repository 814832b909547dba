"""`python -m lnl ...` is the same as the `lnl` command."""

from lnl.run.main import main

raise SystemExit(main())
