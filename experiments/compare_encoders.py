"""Rebuild the encoder comparison from finished sweeps:

    python experiments/compare_encoders.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--group-by KEY]

Writes comparison.md, comparison.csv, comparison_runs.csv and PNG plots into --out (default:
the first sweep dir) and prints the table. Several sweeps pool their runs, e.g. more seeds
launched later. Failed, incomplete and never-started runs are listed, not dropped.
--group-by compares along another Hydra choice (``model/image_encoder``) or dotted config
key (``optim.lr``) of a sweep; the report then checks that only that key and the seed vary.
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
from _report_cli import rebuild
from ssm.report.comparison import DEFAULT_GROUP, write_comparison_report


def main(argv=None) -> Path:
    return rebuild(__doc__, write_comparison_report, argv, group_by_default=DEFAULT_GROUP)


if __name__ == "__main__":
    main()
