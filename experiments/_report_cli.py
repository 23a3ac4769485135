"""The command line shared by the report rebuilders (compare_encoders.py, dense_report.py):
sweep dirs in, a report written into --out (default: the first sweep dir) and printed."""
from __future__ import annotations

import argparse
from pathlib import Path


def rebuild(doc: str, write, argv=None, group_by_default=None) -> Path:
    """Parse SWEEP_DIR... [--out DIR] (and --group-by KEY when ``group_by_default`` is
    given), call ``write(sweep_dirs, out[, group_by])`` and print the Markdown it wrote.
    A bad argument (ValueError from ``write``) exits with status 2 and the message."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs")
    parser.add_argument("--out", type=Path, default=None, help="report dir (default: first sweep)")
    if group_by_default is not None:
        parser.add_argument("--group-by", default=group_by_default,
                            help="Hydra choice or dotted config key to compare (default: %(default)s)")
    args = parser.parse_args(argv)
    extra = [args.group_by] if group_by_default is not None else []
    try:
        path = write(args.sweep_dirs, args.out, *extra)
    except ValueError as exc:
        parser.error(str(exc))
    print(path.read_text())
    print(f"report written to {path.parent}")
    return path
