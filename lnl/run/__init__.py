"""The `lnl` command and what a run needs around the algorithms: the LightningCLI (`fit|validate|test|predict`),
`lnl report`, checks before anything is written, checkpoints, results, console lines, the stall watchdog and DDP.

The top of the house: it may import every other package; nothing imports it (docs/design.md, "Layout")."""
