"""A training run directory read back by the tests: its files, metrics and history.

Tests import these names (``from run_files import files_of``).
"""
import json
from pathlib import Path


def files_of(run_dir: Path) -> dict:
    """{path relative to run_dir: bytes} of every file below it: two calls compare equal
    exactly when nothing was written, removed or added."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[tuple]:
    """(step, loss) of every training line of metrics.jsonl, in file order."""
    return [(x["step"], x["loss"]) for x in metric_lines(run_dir) if "loss" in x]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
