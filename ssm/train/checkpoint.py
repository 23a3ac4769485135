"""Checkpoints written atomically and read back safely (``weights_only=True``).

A checkpoint holds everything a run needs to continue exactly: model, optimizer,
scheduler and grad-scaler states, the step, the data position and every RNG state.

A run's ``checkpoints/`` holds ``last.pt`` (the newest state) and ``step_NNNNNNN.pt`` every
``trainer.checkpoint_every`` steps. One save serialises the state once, into a hidden
temporary file, and renames it into place: first as ``step_N.pt`` (when numbered), then as
``last.pt``. A kill at any moment therefore leaves every earlier file whole; at worst it
leaves a temporary file (``remove_temporary_files`` clears those at the next start) or a
``step_N.pt`` newer than ``last.pt`` (``newest_intact`` resumes from it).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

LAST = "last.pt"
_NUMBERED = re.compile(r"step_(\d+)\.pt")
_TEMPORARY = re.compile(r"\..+\.tmp-\d+")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read; the message names the file."""


def numbered_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_checkpoint(state: dict, path: Path, also: Sequence[Path] = ()) -> None:
    """Write ``state`` to ``path``, and the same bytes to each path in ``also`` first.

    The state is serialised once into a temporary file beside ``path``; each name in
    ``also`` gets a hard link to it (a copy where links are not supported) renamed into
    place, and then the temporary file itself is renamed to ``path``. Every rename is
    atomic, so readers see a whole old file or a whole new one, never half of one; a
    failed write removes its temporary files and keeps the previous checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    made = [tmp]
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        for other in map(Path, also):
            twin = _temporary(other)
            made.append(twin)
            if twin.exists():
                twin.unlink()
            try:
                os.link(tmp, twin)  # one file, two names: no second write
            except OSError:
                shutil.copyfile(tmp, twin)
            os.replace(twin, other)
        os.replace(tmp, path)
    except BaseException:
        for leftover in made:
            if leftover.exists():
                leftover.unlink()
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so the renames in it survive a power cut (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A missing file raises FileNotFoundError; a file that cannot be read (cut short,
    corrupt, or holding pickled code) raises CheckpointError; both name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # torch.save's format; a cut-short file loses its index
        raise CheckpointError(f"cannot read checkpoint {path}: not a whole torch.save file "
                              f"({path.stat().st_size} bytes; cut short or corrupt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch.load raises many types for a bad file)
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``step_N.pt`` in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _NUMBERED.fullmatch(p.name)) and p.is_file()]
    return sorted(found, reverse=True)


def newest_intact(folder: Path, required: Sequence[str] = ("step", "model")
                  ) -> Optional[tuple[Path, dict, list[str]]]:
    """The checkpoint to resume from, as (path, state, problems).

    ``last.pt``, unless a ``step_N.pt`` holds a later step (a kill between the two renames
    of a save) or ``last.pt`` cannot be read; then the newest readable ``step_N.pt``.
    A file counts as intact when it loads and holds the ``required`` keys. ``problems``
    names each unreadable file passed over (empty when ``last.pt`` was taken). Returns
    None when ``folder`` holds no checkpoint at all; raises CheckpointError naming every
    file when there are checkpoints but none is intact.
    """
    folder = Path(folder)
    problems: list[str] = []

    def intact(path: Path) -> Optional[dict]:
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            return None
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if missing:
            problems.append(f"{path} is not a training checkpoint: no {missing}")
            return None
        return state

    best: Optional[tuple[Path, dict]] = None
    last = folder / LAST
    if last.is_file() and (state := intact(last)) is not None:
        best = (last, state)
    newest_step = best[1]["step"] if best else -1
    for step, path in numbered_checkpoints(folder):
        if step <= newest_step:
            break
        if (state := intact(path)) is not None:
            best = (path, state)
            break
    if best is None:
        if problems:
            raise CheckpointError(f"no intact checkpoint in {folder}: " + "; ".join(problems))
        return None
    return best[0], best[1], problems


def temporary_files(folder: Path) -> list[Path]:
    """The hidden ``.<name>.tmp-<pid>`` files that killed writes left in ``folder`` (the
    run's atomic writes all use this pattern)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file())


def remove_temporary_files(folder: Path) -> list[Path]:
    """Delete what killed writes left behind (a whole or partial file that was never
    renamed into place); returns the removed paths. Call it before a run starts writing,
    while no write is in flight."""
    removed = temporary_files(folder)
    for path in removed:
        path.unlink()
    return removed


def rng_state() -> dict:
    """Every RNG a training step draws from, as tensors and plain values."""
    state = {
        "python": _python_state_to_list(random.getstate()),
        "numpy": _numpy_state_to_dict(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_python_state_from_list(state["python"]))
    np.random.set_state(_numpy_state_from_dict(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only loading accepts tensors, lists, dicts, ints and strings, not tuples of
# arbitrary objects: convert the RNG states to those and back.
def _python_state_to_list(state):
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _python_state_from_list(state):
    version, internal, gauss = state
    return (version, tuple(int(x) for x in internal.tolist()), gauss)


def _numpy_state_to_dict(state):
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_dict(state):
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
            state["has_gauss"], state["cached"])
