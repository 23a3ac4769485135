"""Rebuild the caption-length scaling report of a sweep:

    python experiments/scaling_report.py multirun/long_captions/<stamp> [--bar 4.5]
        [--from-length 256] [--linear-encoder mamba] [--out DIR]

Writes scaling.md, scaling.csv and scaling.png into the sweep dir (or --out) and prints the
Markdown. Exit status 0 whatever the verdict; 2 for a bad argument.
"""
from __future__ import annotations

import argparse
import sys

import _paths  # noqa: F401  (the checkout on sys.path; first)
from ssm.report.scaling import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="the multirun dir of +experiment=long_captions")
    parser.add_argument("--bar", type=float, default=4.5, help="largest allowed t(4L) / t(L)")
    parser.add_argument("--from-length", type=int, default=256,
                        help="judge t(4L) / t(L) for every L >= this")
    parser.add_argument("--linear-encoder", default="mamba", help="the encoder held to the bar")
    parser.add_argument("--out", default=None, help="where to write (default: the sweep dir)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.sweep_dir, args.out, bar=args.bar,
                              from_length=args.from_length, linear_encoder=args.linear_encoder)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(report["markdown"])
    print("wrote " + ", ".join(str(p) for p in report["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
