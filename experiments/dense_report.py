"""Rebuild the dense-captions report from finished sweeps:

    python experiments/dense_report.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Writes dense_captions.md, dense_captions.csv, needle_position.png and caption_length.png
into --out (default: the first sweep dir) and prints the Markdown. Several sweeps pool
their runs (say, more seeds launched later).
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
from _report_cli import rebuild
from ssm.report.dense import write_dense_report


def main(argv=None) -> Path:
    return rebuild(__doc__, write_dense_report, argv)


if __name__ == "__main__":
    main()
