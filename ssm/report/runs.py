"""Read a Hydra sweep's job directories back: what ran, with which choices, and how it ended.

A job dir (``<sweep>/<n>/``) holds ``.hydra/{config,hydra,overrides}.yaml`` from the moment
the job starts, ``metrics.jsonl`` while it trains and ``results.json`` once it has finished.
``job_status.json`` is written by the report callbacks when Hydra hands back a job's
return (so a job that raised is told apart from one that was killed or is still running).
"""
from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

STATUS_FILE = "job_status.json"
ITEMS_FILE = "eval_items.json"


@dataclass
class RunRecord:
    """One job of a sweep. status: complete | failed | incomplete | missing."""
    path: Optional[Path]
    status: str
    choices: dict = field(default_factory=dict)   # Hydra group choices, e.g. model/text_encoder
    config: dict = field(default_factory=dict)    # the job's resolved config
    results: dict = field(default_factory=dict)
    error: str = ""
    _items: Optional[dict] = field(default=None, repr=False, compare=False)

    def value(self, key: str):
        """A group choice (``model/text_encoder``) or a dotted config key (``seed``)."""
        if key in self.choices:
            return self.choices[key]
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def curve(self, key: str = "loss") -> tuple[list, list]:
        """(steps, values) of ``key`` from metrics.jsonl; empty when there is none."""
        steps, values = [], []
        metrics = self.path / "metrics.jsonl" if self.path else None
        if metrics is None or not metrics.exists():
            return steps, values
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if key in row and "step" in row:
                steps.append(row["step"])
                values.append(row[key])
        return steps, values


    def items(self) -> dict:
        """Per-item evaluation outcomes (eval_items.json: ``t2i_rank``, ``probes``,
        ``order``, ``needle``); {} when the run wrote none. Read once, then kept."""
        if self._items is None:
            path = self.path / ITEMS_FILE if self.path else None
            self._items = json.loads(path.read_text()) if path and path.exists() else {}
        return self._items


def write_atomic(path: Path, writer) -> None:
    """``writer(tmp)`` writes a temporary file beside ``path`` (same suffix, so savefig keeps
    its format), then a rename puts it in place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, data) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_job_status(job_dir: Path, status: str, error: str = "") -> None:
    write_json_atomic(Path(job_dir) / STATUS_FILE, {"status": status, "error": error})


def _yaml(path: Path):
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else None


def read_run(job_dir: Path) -> RunRecord:
    """The record of one job dir (one that holds ``.hydra/``)."""
    job_dir = Path(job_dir)
    hydra_meta = _yaml(job_dir / ".hydra" / "hydra.yaml") or {}
    choices = dict(hydra_meta.get("hydra", {}).get("runtime", {}).get("choices", {}) or {})
    record = RunRecord(path=job_dir, status="incomplete", choices=choices,
                       config=_yaml(job_dir / ".hydra" / "config.yaml") or {})
    marker = job_dir / STATUS_FILE
    if marker.exists():
        status = json.loads(marker.read_text())
        record.error = status.get("error", "")
        if status.get("status") == "failed":
            record.status = "failed"
    results = job_dir / "results.json"
    if results.exists() and record.status != "failed":
        record.results = json.loads(results.read_text())
        record.status = "complete"
    if record.status == "incomplete":
        record.error = "no results.json: the job was killed, is still running or never ended"
    return record


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job dirs under a sweep dir, in job-number order where the names are numbers."""
    found = [p.parent.parent for p in Path(sweep_dir).glob("**/.hydra/hydra.yaml")]
    return sorted(set(found), key=lambda p: (len(p.parts), p.name.zfill(8), str(p)))


def expected_jobs(sweep_dir: Path) -> list[dict]:
    """The sweep's grid as {key: value string} dicts, rebuilt the way Hydra's basic sweeper
    builds it: hydra.sweeper.params first, then the command line's overrides, from
    multirun.yaml. [] when the sweep is not a plain grid (e.g. Optuna's intervals)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    meta = (_yaml(Path(sweep_dir) / "multirun.yaml") or {}).get("hydra", {})
    params = (meta.get("sweeper", {}) or {}).get("params") or {}
    if not str((meta.get("sweeper", {}) or {}).get("_target_", "")).endswith("BasicSweeper"):
        return []
    lines = [f"{k}={v}" for k, v in params.items()] + list(meta.get("overrides", {}).get("task", []))
    axes, swept = {}, set()
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return []
            axes[key] = list(override.sweep_string_iterator())
            swept.add(key)
        else:
            axes[key] = [override.get_value_element_as_str()]
    axes = {k: v for k, v in axes.items() if k in swept}
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _as_override(value) -> str:
    """A config value written the way an override spells it (None -> null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _same(value, spelled: str) -> bool:
    """Does a config value equal an override's spelling of it (2e-3 == 0.002, null == None)?"""
    if _as_override(value) == spelled:
        return True
    try:
        return float(value) == float(spelled)
    except (TypeError, ValueError):
        return False


def _matches(record: RunRecord, wanted: dict) -> bool:
    return all(_same(record.value(k), v) for k, v in wanted.items())


def collect_runs(sweep_dirs) -> list[RunRecord]:
    """Every job of the given sweeps, plus a ``missing`` record for each grid point of a
    sweep that has no job dir at all (a sweep stopped before reaching it)."""
    records = []
    for sweep_dir in sweep_dirs:
        sweep_dir = Path(sweep_dir)
        if not sweep_dir.is_dir():
            raise ValueError(f"sweep_dir {str(sweep_dir)!r} is not a directory")
        runs = [read_run(d) for d in job_dirs(sweep_dir)]
        if not runs:
            raise ValueError(f"sweep_dir {str(sweep_dir)!r} holds no Hydra job dirs "
                             "(no <job>/.hydra/hydra.yaml below it)")
        for wanted in expected_jobs(sweep_dir):
            if not any(_matches(r, wanted) for r in runs):
                runs.append(RunRecord(path=None, status="missing", choices=dict(wanted),
                                      error=f"never started in {sweep_dir}"))
        records.extend(runs)
    return records


def open_sweeps(sweep_dirs, out_dir=None) -> tuple[list[Path], list[RunRecord], Path]:
    """(sweep dirs as paths, every job's record, the report dir made): what a report
    builder starts from. ``out_dir`` defaults to the first sweep dir."""
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path))
                                    else sweep_dirs)]
    if not sweep_dirs:
        raise ValueError("sweep_dirs is empty: give at least one sweep directory")
    records = collect_runs(sweep_dirs)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    return sweep_dirs, records, out_dir
