"""Rebuild the encoder (or decoder) comparison from finished sweeps:

    python experiments/compare_encoders.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--group-by KEY]
        [--report decoders]

Writes comparison.md, comparison.csv, comparison_runs.csv and PNG plots into --out (default:
the first sweep dir) and prints the table. Several sweeps pool their runs, e.g. more seeds
launched later. Failed, incomplete and never-started runs are listed, not dropped.
--group-by compares along another Hydra choice (``model/image_encoder``) or dotted config
key (``optim.lr``) of a sweep; the report then checks that only that key and the seed vary.
--report decoders rebuilds a compare_decoders sweep's report (caption metrics, generation speed).
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
from _report_cli import rebuild
from ssm.report.callbacks import REPORTS
from ssm.report.comparison import write_comparison_report


def main(argv=None) -> Path:
    return rebuild(__doc__, write_comparison_report, argv,
                   group_by="model/text_encoder, or model/decoder with --report decoders",
                   reports=REPORTS)


if __name__ == "__main__":
    main()
