"""`lnl report CKPT`: the label report, corrected labels, noise estimate and pictures of a saved checkpoint (the
files a fit writes at its end, e.g. for an older checkpoint or another epoch), written into a new folder: by
default `<run>/eval/report_<checkpoint>[_k]/`, or `--out DIR` (a new or empty folder). The run's own files, its
recorded results included, are never changed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from lnl.errors import ConfigError
from lnl.validation import existing_file


def _new_folder(path: Path) -> Path:
    """Make and return `path`, or the first free `<path>_<k>` (k = 1, 2, ...), created exclusively."""
    from lnl.run.run_guard import free_name

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        target = free_name(path)
        try:
            target.mkdir()
            return target
        except FileExistsError:
            continue


def main(argv: list[str]) -> int:
    """Entry point of `lnl report`; bad input ends with one `lnl: error:` line and exit code 2."""
    parser = argparse.ArgumentParser(prog="lnl report", description=__doc__)
    parser.add_argument(
        "ckpt_path", help="a checkpoint written by `lnl fit` (e.g. .../checkpoints/last.ckpt)"
    )
    parser.add_argument("--config", help="the run's config (default: config.yaml of the checkpoint's run)")
    parser.add_argument(
        "--out", help="a new (or empty) output folder (default: <run>/eval/report_<checkpoint>[_k]/)"
    )
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
    from lnl.run.preflight import checkpoint_run_dir, checkpoint_tag, read_checkpoint

    state = read_checkpoint(ckpt)  # one clear line for a missing, truncated or foreign file
    run_dir = checkpoint_run_dir(ckpt)
    config = config or str(run_dir / "config.yaml")
    existing_file("config", config, "pass --config with the run's config")
    if out is not None and Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"out = {out}: already exists and is not an empty folder; name a new folder")
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
    directory = str(
        Path(out) if out is not None else _new_folder(run_dir / "eval" / f"report_{checkpoint_tag(ckpt)}")
    )
    report = write_run_report(cli.trainer, model, datamodule, directory, ckpt.name)
    with open(os.path.join(directory, "results.json"), "x") as f:  # the report's numbers; the run's stay
        json.dump(report.results | {"report/checkpoint": str(ckpt)}, f, indent=2, default=str)
    n, flagged = report.results["report/n_samples"], report.results["report/n_flagged"]
    rates = report.results["report/noise_rate_corroborated"], report.results["report/noise_rate_estimate"]
    print(f"lnl: label report of {ckpt.name}: {flagged} of {n} noisy-part labels flagged, estimated noise rate "
          f"{rates[0]:.4f} (Confident Learning alone {rates[1]:.4f}); files in {directory}")  # fmt: skip
    print(f"lnl: corrected labels: {report.results['report/decision']}")
    return 0
