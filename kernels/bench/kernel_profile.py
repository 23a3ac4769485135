"""The static kernel profile: every Triton kernel of the package compiled for sm_90a on the
machine at hand (no GPU), one row per kernel, written as CSV and Markdown.

Compilation runs in a subprocess (``sm90_profile.py`` as a script) so that another Python
with another Triton can do it (``triton_python``), and so TRITON_INTERPRET=1 in the calling
process does not apply. Per-element counts are static: the instructions of the innermost
loop's body (the state loop of the scan kernels) over the elements one thread handles per
iteration; for kernels without a loop, the whole kernel.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .sm90_profile import ROOT

WORKER = Path(__file__).with_name("sm90_profile.py")
COLUMNS = ("kernel", "config", "options", "registers", "spill_bytes", "shared_bytes",
           "sass_per_element", "shuffles_per_element", "barriers_per_element",
           "mufu_per_element", "atomics_per_element", "loop_instructions",
           "elements_per_thread", "element", "hot_loop", "stack_bytes", "triton", "error")
# Targets of issue 11, judged on the default rows (not on autotune candidates).
TARGETS = {"selective_scan_fwd": {"spill_bytes": 0, "sass_per_element": 30,
                                  "shuffles_per_element": 2},
           "selective_scan_bwd": {"spill_bytes": 0, "sass_per_element": 60}}


def build_request(scan: dict, state_update: dict, conv: dict, candidates: bool = False,
                  kernels=(), kernels_root=None, scan_options=()) -> dict:
    """The worker's request: shapes per op, and with ``candidates`` every autotune
    candidate of the scan kernels after the launcher's default. ``kernels_root``: compile
    the kernels of another checkout (a folder holding its ``kernels/``). ``scan_options``:
    sets of scan options to compile instead of the Mamba block's."""
    request = {"scan": dict(scan), "state_update": dict(state_update), "conv": dict(conv),
               "kernels": list(kernels), "scan_options": [dict(o) for o in scan_options]}
    if kernels_root:
        request["kernels_root"] = str(Path(kernels_root).resolve())
    if candidates:
        from kernels.selective_scan.triton_common import COMPILED_FORWARD, backward_at
        from kernels.selective_scan.triton_tuning import (BACKWARD_CANDIDATES,
                                                          FORWARD_CANDIDATES)
        pairs = [[None, None]]
        pairs += [[asdict(c), None] for c in FORWARD_CANDIDATES]
        pairs += [[None, asdict(backward_at(c, COMPILED_FORWARD.block_l))]
                  for c in BACKWARD_CANDIDATES]
        request["scan_configs"] = pairs
    return request


def run_worker(request: dict, python: str | None = None, timeout: float = 1800) -> list[dict]:
    """Rows from the worker run by ``python`` (default: this interpreter). Raises
    RuntimeError with the worker's stderr if it fails as a whole."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the kernels set it explicitly anyway
    done = subprocess.run([python or sys.executable, str(WORKER)], input=json.dumps(request),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"kernel profile worker failed ({python or sys.executable}):\n"
                           f"{done.stderr[-4000:]}")
    rows = json.loads(done.stdout)
    # Candidates repeat the default rows' kernel names; keep the default first, drop repeats.
    unique, seen = [], set()
    for row in rows:
        key = (row["kernel"], row["config"], row.get("options", ""))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def target_report(rows: list[dict]) -> list[str]:
    """One line per target: the default row's value, the bound and whether it is met."""
    lines = []
    for kernel, bounds in TARGETS.items():
        row = next((r for r in rows if r["kernel"] == kernel), None)
        for column, bound in bounds.items():
            if row is None or "error" in row:
                lines.append(f"- {kernel} {column} <= {bound}: not measured")
                continue
            value = row[column]
            met = "met" if value <= bound else "NOT met"
            lines.append(f"- {kernel} {column} = {value:.3g} (<= {bound}): {met}")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def format_markdown(rows: list[dict], title: str) -> str:
    shown = ("kernel", "config", "options", "registers", "spill_bytes", "shared_bytes",
             "sass_per_element", "shuffles_per_element", "barriers_per_element", "mufu_per_element",
             "atomics_per_element", "element", "hot_loop")
    text_columns = ("kernel", "config", "options", "element", "hot_loop")
    lines = [f"### {title}", "", "| " + " | ".join(shown) + " |",
             "|" + "|".join("---" if c in text_columns else "---:" for c in shown) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['kernel']} | {row['config']} | failed: "
                         f"{row['error'].splitlines()[0][:200]} |" + " |" * (len(shown) - 3))
            continue
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in shown) + " |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out_dir: Path, title: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "kernel_profile.csv", out_dir / "kernel_profile.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    targets = "\n".join(["Targets (issue 11, default configs):", "", *target_report(rows)])
    md_path.write_text(format_markdown(rows, title) + "\n\n" + targets + "\n")
    return csv_path, md_path
