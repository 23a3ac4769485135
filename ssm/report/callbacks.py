"""Hydra callbacks that keep a sweep's report up to date.

Attach with ``hydra.callbacks.<name>._target_: ssm.report.callbacks.ComparisonReport``
(the compare_encoders presets do; ``report: decoders`` for compare_decoders) or
``ssm.report.callbacks.ScalingReport`` (long_captions).
After every job the callback records how the job ended (``job_status.json``) and rewrites
the report, so a sweep that dies halfway still leaves a report that names its failed and
missing runs; ``on_multirun_end`` writes the final one.
"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ssm.report.comparison import ENCODERS, write_comparison_report
from ssm.report.decoders import DECODERS, measure_generation
from ssm.report.runs import collect_runs, write_job_status
from ssm.report.scaling import linear_verdict, write_report

log = logging.getLogger(__name__)

REPORTS = {"encoders": ENCODERS, "decoders": DECODERS}


def job_error(job_return: JobReturn) -> str:
    """'ExceptionType: message' of a failed job; '' for one that completed."""
    if job_return.status != JobStatus.FAILED:
        return ""
    try:
        job_return.return_value  # noqa: B018 (re-raises the job's exception)
    except Exception as exc:  # noqa: BLE001 (any exception a job raised is reported)
        return f"{type(exc).__name__}: {exc}"
    return "failed"


class SweepReportCallback(Callback):
    """A report over a multirun's jobs, kept up to date: after every job it records how the
    job ended (``job_status.json``) and rewrites the report; at the end it writes the final
    one and announces it. Subclasses say how to write and announce. Single runs are left
    alone."""

    def write_report(self, sweep_dir: Path):
        raise NotImplementedError

    def announce(self, report) -> None:
        raise NotImplementedError

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        write_job_status(Path(config.hydra.runtime.output_dir),
                         "failed" if failed else "complete", job_error(job_return))
        try:
            self.write_report(Path(config.hydra.sweep.dir))
        except Exception as exc:  # noqa: BLE001 (a partial report must not fail the job)
            log.warning("could not refresh the %s: %s", type(self).__name__, exc)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        self.announce(self.write_report(Path(config.hydra.sweep.dir)))


class ComparisonReport(SweepReportCallback):
    """Writes comparison.md/.csv and plots into the sweep dir (see ssm.report.comparison).
    report: "encoders" (text encoders) or "decoders" (caption decoders, ssm.report.decoders);
    group_by: the Hydra choice or config key compared (default: the report's).
    generation (decoders only): {lengths, batch_sizes, repeats}: when the sweep ends, time
    each decoder's generation first (``ssm.report.decoders.measure_generation``)."""

    def __init__(self, group_by: str | None = None, report: str = "encoders",
                 generation: dict | None = None):
        if report not in REPORTS:
            raise ValueError(f"report must be one of {sorted(REPORTS)}, got {report!r}")
        if generation and report != "decoders":
            raise ValueError("generation timing belongs to report=decoders")
        self.group_by, self.spec, self.generation = group_by, REPORTS[report], generation

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and self.generation:
            sweep_dir = Path(config.hydra.sweep.dir)
            try:
                measure_generation(collect_runs([sweep_dir]), sweep_dir, **self.generation)
            except Exception as exc:  # noqa: BLE001 (the report still names what ran)
                log.warning("could not time generation: %s", exc)
        super().on_multirun_end(config, **kwargs)

    def write_report(self, sweep_dir: Path) -> Path:
        path = write_comparison_report([sweep_dir], sweep_dir, self.group_by, self.spec)
        log.info("comparison report: %s", path)
        return path

    def announce(self, path: Path) -> None:
        print(f"\nComparison report: {path}\n" + path.read_text().split("\n## ")[0], flush=True)


class ScalingReport(SweepReportCallback):
    """Writes scaling.md/.csv/.png into the sweep dir (see ssm.report.scaling), with the
    linear-cost verdict: t(4L) / t(L) <= ``bar`` for ``linear_encoder`` from ``from_length``."""

    def __init__(self, bar: float = 4.5, from_length: int = 256, linear_encoder: str = "mamba"):
        linear_verdict([], linear_encoder, bar, from_length)  # validates bar and from_length
        self.options = dict(bar=bar, from_length=from_length, linear_encoder=linear_encoder)

    def write_report(self, sweep_dir: Path) -> dict:
        return write_report(sweep_dir, **self.options)

    def announce(self, report: dict) -> None:
        print(f"\nScaling report: {report['paths']['md']}\n{report['verdict'].line()}",
              flush=True)
