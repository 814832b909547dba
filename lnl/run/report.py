"""`lnl report CKPT`: the label report, corrected labels, noise estimate and pictures of a saved checkpoint, written
into its run directory (the same files a fit writes at its end, e.g. for an older checkpoint or another epoch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from lnl.errors import ConfigError
from lnl.validation import existing_file


def main(argv: list[str]) -> int:
    """Entry point of `lnl report`; bad input ends with one `lnl: error:` line and exit code 2."""
    parser = argparse.ArgumentParser(prog="lnl report", description=__doc__)
    parser.add_argument(
        "ckpt_path", help="a checkpoint written by `lnl fit` (e.g. .../checkpoints/last.ckpt)"
    )
    parser.add_argument("--config", help="the run's config (default: config.yaml of the checkpoint's run)")
    parser.add_argument("--out", help="output directory (default: the checkpoint's run directory)")
    args = parser.parse_args(argv)
    from lnl.run.cli import quiet

    quiet()
    try:
        return _report(Path(args.ckpt_path), args.config, args.out)
    except ConfigError as error:
        print(f"lnl: error: {error}", file=sys.stderr)
        return 2


def _report(ckpt: Path, config: str | None, out: str | None) -> int:
    from lnl.run.cli import LNLCLI
    from lnl.run.fit_report import EpochHistory, write_run_report
    from lnl.run.preflight import checkpoint_run_dir, read_checkpoint

    state = read_checkpoint(ckpt)  # one clear line for a missing, truncated or foreign file
    run_dir = checkpoint_run_dir(ckpt)
    config = config or str(run_dir / "config.yaml")
    existing_file("config", config, "pass --config with the run's config")
    settings = yaml.safe_load(Path(config).read_text())
    for key in ("ckpt_path", "weights_only"):  # a fit's saved config holds its subcommand's own arguments
        settings.pop(key, None)
    settings.setdefault("trainer", {}).update(logger=False, devices=1, strategy="auto")
    cli = LNLCLI(args=settings, run=False)
    model, datamodule = cli.model, cli.datamodule
    datamodule.load_state_dict(state.get(type(datamodule).__qualname__, {}))
    model.restore(state)
    for callback in cli.trainer.callbacks:  # the learning curves of the run up to this checkpoint
        if isinstance(callback, EpochHistory):
            callback.load_state_dict(state.get("callbacks", {}).get(callback.state_key, {}))
    directory = out or str(run_dir)
    report = write_run_report(cli.trainer, model, datamodule, directory, ckpt.name)
    results_path = os.path.join(directory, "results.json")
    results = json.loads(Path(results_path).read_text()) if os.path.isfile(results_path) else {}
    with open(results_path, "w") as f:
        json.dump(results | report.results, f, indent=2, default=str)
    n, flagged = report.results["report/n_samples"], report.results["report/n_flagged"]
    print(f"lnl: label report of {ckpt.name}: {flagged} of {n} noisy-part labels flagged, estimated noise rate "
          f"{report.results['report/noise_rate_estimate']:.4f}; files in {directory}")  # fmt: skip
    print(f"lnl: corrected labels: {report.results['report/decision']}")
    return 0
