"""Rebuild the encoder comparison from finished sweeps:

    python experiments/compare_encoders.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Writes comparison.md, comparison.csv, comparison_runs.csv and PNG plots into --out (default:
the first sweep dir) and prints the table. Several sweeps pool their runs, e.g. more seeds
launched later. Failed, incomplete and never-started runs are listed, not dropped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from ssm.report.comparison import write_comparison_report  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs")
    parser.add_argument("--out", type=Path, default=None, help="report dir (default: first sweep)")
    parser.add_argument("--group-by", default="model/text_encoder",
                        help="Hydra choice or dotted config key to compare (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = write_comparison_report(args.sweep_dirs, args.out, args.group_by)
    except ValueError as exc:
        parser.error(str(exc))
    print(path.read_text())
    print(f"report written to {path.parent}")
    return path


if __name__ == "__main__":
    main()
