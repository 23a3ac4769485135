"""Makes a checkout importable for the entry points: ``import _paths`` first thing.

``python experiments/X.py`` puts experiments/ on sys.path, not the repo root, so without an
install ``ssm`` and ``kernels`` would not import. This puts the root on sys.path, and on
PYTHONPATH for the processes a launcher starts (submitit jobs, joblib workers), which
unpickle the task and import ssm wherever they run.
"""
import os
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in dict.fromkeys((ROOT, *os.environ.get("PYTHONPATH", "").split(os.pathsep))) if p)
