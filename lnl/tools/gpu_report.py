"""`gpu_check.md` / `gpu_check.json`: what `make gpu-check` measured and PASS / FAIL for each threshold of issue 19."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lnl.tools.bench_measure import BenchResult
from lnl.tools.gpu_fits import FitRun

AFTER_TRAINING_MAX_S = 30.0
DML_STEPS_MIN = 12.0
SM_BUSY_MIN = 85.0
CE_OVER_PLAIN_MAX = 1.10
POST_TRAINING_FITS = ("dml", "emlc", "mwnet", "simclr")  # issue 19: each <= 30 s after training


@dataclass
class BenchSection:
    """One `lnl.tools.bench` run of CE (+ the plain loop) on a backbone, batch and precision."""

    name: str
    backbone: str
    batch_size: int
    precision: str
    wall_s: float = 0.0
    results: list[BenchResult] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One acceptance line: what, the measured value, the threshold, PASS / FAIL / n/a."""

    check: str
    value: str
    threshold: str
    status: str


@dataclass
class GpuCheckReport:
    """Everything `gpu_check.json` holds."""

    device: str
    device_name: str
    cpu_fallback: bool
    torch_version: str
    sm_source: str = ""
    fits: list[FitRun] = field(default_factory=list)
    benches: list[BenchSection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    wall_s: float = 0.0
    finished: bool = False
    ran_ok: bool = False


def fit_ok(f: FitRun) -> bool:
    return f.exit_code == 0 and f.results_json and f.probe.batches > 0


def _row(r: BenchResult | None) -> str:
    return "-" if r is None else f"{r.ms_mean:.1f} ms" if r.ms_mean >= 1 else f"{r.ms_mean:.2f} ms"


def verdicts(report: GpuCheckReport) -> list[Verdict]:
    """PASS / FAIL of each acceptance threshold (n/a where it was not measured, e.g. on the CPU fallback)."""
    out: list[Verdict] = []
    gpu = not report.cpu_fallback
    fits = {f.name: f for f in report.fits}
    for name, f in fits.items():
        out.append(Verdict(f"{name}: exit 0 + results.json", f"exit {f.exit_code}, results.json "
                           f"{'yes' if f.results_json else 'no'}", "exit 0 and the file", "PASS" if fit_ok(f) else "FAIL"))  # fmt: skip
        if gpu and (
            f.stream_mismatch_warnings or name.startswith("dml")
        ):  # lnl/run/ddp.py; DML printed it before
            status = "FAIL" if f.stream_mismatch_warnings else "PASS"
            out.append(Verdict(f"{name}: AccumulateGrad stream-mismatch warnings", str(f.stream_mismatch_warnings),
                               "0", status))  # fmt: skip
        if name in POST_TRAINING_FITS and f.probe.batches:
            ok = f.after_training_s <= AFTER_TRAINING_MAX_S
            status = ("PASS" if ok else "FAIL") if gpu else "n/a (CPU)"
            out.append(Verdict(f"{name}: wall - training", f"{f.after_training_s:.1f} s",
                               f"<= {AFTER_TRAINING_MAX_S:.0f} s", status))  # fmt: skip
    dml = fits.get("dml")
    if dml is not None:
        status = ("PASS" if dml.probe.steps_per_s >= DML_STEPS_MIN else "FAIL") if gpu else "n/a (CPU)"
        out.append(Verdict("dml: training steps/s (bf16-mixed)", f"{dml.probe.steps_per_s:.2f}",
                           f">= {DML_STEPS_MIN:.0f}", status))  # fmt: skip
    for name in ("dml", "ce"):
        f = fits.get(name)
        if f is None:
            continue
        value = (
            "not sampled"
            if f.sm_busy_median is None
            else f"{f.sm_busy_median:.0f} % ({f.sm_samples} samples)"
        )
        status = "n/a" if f.sm_busy_median is None else "PASS" if f.sm_busy_median >= SM_BUSY_MIN else "FAIL"
        out.append(Verdict(f"{name}: SM busy, median of 1 s samples", value, f">= {SM_BUSY_MIN:.0f} %",
                           status if gpu else "n/a (CPU)"))  # fmt: skip
    for s in report.benches:
        by = {r.method: r for r in s.results}
        ce, plain = by.get("ce"), by.get("plain")
        ratio = ce.ratio_vs_plain if ce is not None else None
        status = "FAIL" if ratio is None else "PASS" if ratio <= CE_OVER_PLAIN_MAX else "FAIL"
        out.append(Verdict(f"CE / plain step, {s.backbone} batch {s.batch_size} {s.name}",
                           f"{_row(ce)} / {_row(plain)} = {ratio:.2f}x" if ratio else s.error or "not measured",
                           f"<= {CE_OVER_PLAIN_MAX:.2f}x", status if gpu else "n/a (CPU)"))  # fmt: skip
    return out


def summary(report: GpuCheckReport) -> str:
    """The Markdown report: acceptance first, then the fits (speed, SM busy, memory, projection) and the benches."""
    head = "CPU fallback at tiny sizes" if report.cpu_fallback else "GPU sizes"
    failed = sum(v.status == "FAIL" for v in report.verdicts)
    lines = [f"# lnl gpu-check: {report.device_name}, {head}, torch {report.torch_version}, {report.wall_s:.0f} s, "
             f"{'in progress' if not report.finished else 'all parts ran' if report.ran_ok else 'SOME PARTS FAILED'}, "
             f"{failed} acceptance FAIL(s)", "",
             "## Acceptance (issue 19)", "", "| check | measured | threshold | result |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {v.check} | {v.value} | {v.threshold} | {v.status} |" for v in report.verdicts]
    lines += [f"skipped (time budget): {', '.join(report.skipped)}" if report.skipped else "", "",
              "startup: process start to the first training step; end: end of training to exit (tests of the last "
              "and best checkpoints, label report, results.json); wall - train = both. Steps/s: steady state (after "
              "warm-up and profiling, validations left out); projected: the config's full schedule on the real "
              "CIFAR-10 at that rate, validations not counted.", "",
              f"## Fits (`lnl fit`, bf16-mixed, one device; SM busy from {report.sm_source or 'nothing'})", "",
              "| fit | exit | results.json | steps | steps/s | images/s | SM busy % | peak MB | train s | "
              "startup s | end s | wall - train s | paper schedule | projected h |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in report.fits:
        p = f.probe
        sm = "-" if f.sm_busy_median is None else f"{f.sm_busy_median:.0f}"
        hours = "-" if f.paper_hours is None else f"{f.paper_hours:.1f}"
        lines.append(f"| {f.name}{' (DDP x1)' if 'DDP' in p.strategy else ''} | {f.exit_code} | "
                     f"{'yes' if f.results_json else 'no'} | {p.batches} | {p.steps_per_s:.2f} | {f.images_per_s:.0f} | "
                     f"{sm} | {p.peak_mem_mb:.0f} | {p.train_s:.1f} | {f.startup_s:.1f} | {f.end_s:.1f} | {f.after_training_s:.1f} | "
                     f"{f.paper_epochs} ep = {f.paper_steps} steps | {hours} |")  # fmt: skip
    profiled = [f for f in report.fits if f.probe.profile is not None]
    if profiled:
        lines += ["", "## torch.profiler, per training step (right after warm-up)", "",
                  "| fit | steps | wall ms | waiting for data ms | device ms | host-only ms | syncs | .item()-like reads |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for f in profiled:
            b = f.probe.profile
            assert b is not None
            lines.append(f"| {f.name} | {b.steps} | {b.wall_ms:.1f} | {b.data_wait_ms:.1f} | {b.device_ms:.1f} | "
                         f"{b.host_only_ms:.1f} | {b.syncs_per_step:.1f} | {b.scalar_reads_per_step:.1f} |")  # fmt: skip
    lines += [
        f"profile of {f.name} failed: {f.probe.profile_error}" for f in report.fits if f.probe.profile_error
    ]
    lines += ["", "## lnl's CE step against a plain PyTorch loop (`lnl.tools.bench`, data on the device)", "",
              "| backbone | batch | precision | CE ms | plain ms | CE / plain | CE peak MB | plain peak MB |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in report.benches:
        by = {r.method: r for r in s.results}
        ce, plain = by.get("ce"), by.get("plain")
        ratio = f"{ce.ratio_vs_plain:.2f}x" if ce is not None and ce.ratio_vs_plain else s.error or "-"
        lines.append(f"| {s.backbone} | {s.batch_size} | {s.name} | {_row(ce)} | {_row(plain)} | {ratio} | "
                     f"{ce.peak_mem_mb if ce else '-'} | {plain.peak_mem_mb if plain else '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: GpuCheckReport, out: Path) -> None:
    """(Re)write `gpu_check.json` and `gpu_check.md` with what has run so far."""
    report.verdicts = verdicts(report)
    (out / "gpu_check.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    (out / "gpu_check.md").write_text(summary(report))
