"""The `lnl` console script: a light dispatcher that imports torch and Lightning only for a command that needs them.

`lnl --help` and `lnl --version` answer from here without importing either. One module per subcommand:
`fit`, `validate`, `test` and `predict` go to `lnl.run.cli` (the LightningCLI), `report` to `lnl.run.report`,
`aggregate` and `runs` to `lnl.tools.aggregate` and `lnl.tools.runs`.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    """One `lnl` subcommand: the module whose `main(argv)` runs it, whether that argv starts with the command's
    name (and keeps `--debug`), and the one line `lnl --help` shows."""

    module: str
    with_name: bool
    summary: str


COMMANDS: dict[str, Command] = {
    "fit": Command(
        "lnl.run.cli", True, "train a method on noisy labels into a new run directory (or resume one)"
    ),
    "validate": Command("lnl.run.cli", True, "validation accuracy of a checkpoint (--ckpt_path required)"),
    "test": Command("lnl.run.cli", True, "test accuracy of a checkpoint (--ckpt_path required)"),
    "predict": Command("lnl.run.cli", True, "predictions.csv of a checkpoint for a split or new images"),
    "report": Command(
        "lnl.run.report", False, "label report, corrected labels and noise estimate of a checkpoint"
    ),
    "aggregate": Command(
        "lnl.tools.aggregate", False, "results table (mean ± std over seeds) of finished runs"
    ),
    "runs": Command(
        "lnl.tools.runs", False, "the `lnl fit` commands (or a SLURM script) of a paper table x seeds"
    ),
}


def version() -> str:
    """`lnl <version>` with the versions of the libraries it runs on (read from package metadata: no imports)."""
    from importlib import metadata

    from lnl import __version__

    parts = []
    for name in ("torch", "lightning"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"lnl {__version__} ({', '.join(parts)}, python {python})"


def usage() -> str:
    """The text of `lnl --help`: every subcommand with one line."""
    width = max(len("-h, --help"), *map(len, COMMANDS))
    lines = [
        "usage: lnl COMMAND [options]    (lnl COMMAND --help: the command's options)",
        "",
        "Learning with noisy labels by efficient meta-learning (DML, EMLC, MLC, MW-Net, L2RW, CE).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  show this message and exit",
        f"  {'--version':<{width}}  show the versions of lnl, torch and lightning and exit",
        f"  {'--debug':<{width}}  show the traceback of an error instead of one `lnl: error:` line",
        "",
        "Start with: lnl fit --config configs/quickstart.yaml",
    ]
    return "\n".join(lines) + "\n"


def main(args: list[str] | None = None) -> int:
    """Entry point of `lnl`: help and version here, every command in its own module (imported only when run)."""
    argv = list(sys.argv[1:] if args is None else args)
    words = [a for a in argv if a != "--debug"]
    first = words[0] if words else None
    if first in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    if first == "--version":
        print(version())
        return 0
    if first is None:
        sys.stderr.write(usage())
        print("lnl: error: no command given (one of: " + ", ".join(COMMANDS) + ")", file=sys.stderr)
        return 2
    command = COMMANDS.get(first)
    if command is None:
        print(f"lnl: error: unknown command {first!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    run = importlib.import_module(command.module).main
    return run(argv if command.with_name else words[1:])
