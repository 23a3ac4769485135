"""The command line shared by the report rebuilders (compare_encoders.py, dense_report.py):
sweep dirs in, a report written into --out (default: the first sweep dir) and printed."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional


def rebuild(doc: str, write, argv=None, group_by: Optional[str] = None,
            reports: Optional[dict] = None) -> Path:
    """Parse SWEEP_DIR... [--out DIR], call ``write(sweep_dirs, out, **options)`` and print
    the Markdown it wrote. ``group_by`` (the help's words for the default) adds
    --group-by KEY, passed as ``group_by``; ``reports`` ({name: spec}, the first name the
    default) adds --report NAME, passed as ``spec``. A bad argument (ValueError from
    ``write``) exits with status 2 and the message."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs")
    parser.add_argument("--out", type=Path, default=None, help="report dir (default: first sweep)")
    if group_by is not None:
        parser.add_argument("--group-by", default=None,
                            help=f"Hydra choice or dotted config key to compare (default: "
                                 f"{group_by})")
    if reports:
        parser.add_argument("--report", choices=list(reports), default=next(iter(reports)),
                            help="which comparison the sweep is (default: %(default)s)")
    args = parser.parse_args(argv)
    options = {}
    if group_by is not None:
        options["group_by"] = args.group_by
    if reports:
        options["spec"] = reports[args.report]
    try:
        path = write(args.sweep_dirs, args.out, **options)
    except ValueError as exc:
        parser.error(str(exc))
    print(path.read_text())
    print(f"report written to {path.parent}")
    return path
