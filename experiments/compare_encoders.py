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

import argparse
from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
from ssm.report.callbacks import REPORTS
from ssm.report.comparison import write_comparison_report


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs")
    parser.add_argument("--out", type=Path, default=None, help="report dir (default: first sweep)")
    parser.add_argument("--group-by", default=None,
                        help="Hydra choice or dotted config key to compare (default: "
                             "model/text_encoder, or model/decoder with --report decoders)")
    parser.add_argument("--report", choices=sorted(REPORTS), default="encoders",
                        help="which comparison the sweep is (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = write_comparison_report(args.sweep_dirs, args.out, args.group_by,
                                       REPORTS[args.report])
    except ValueError as exc:
        parser.error(str(exc))
    print(path.read_text())
    print(f"report written to {path.parent}")
    return path


if __name__ == "__main__":
    main()
