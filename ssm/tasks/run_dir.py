"""A training run's directory and its record of itself.

A run dir describes the run in it, and only that run:

- ``.hydra/config.yaml``: the config the run trains with (Hydra's layout, which
  ``experiments/evaluate.py`` and the sweep reports read); ``hydra.yaml`` and
  ``overrides.yaml`` beside it are Hydra's record of the first start.
- ``history.jsonl``: one line per accepted start (``start``, ``resume``) and per ending
  (``finish``, ``stopped``): when, at which step, with which overrides, what a resume changed.

The train task writes ``.hydra/`` itself; ``conf/train.yaml`` turns Hydra's own copy off
(``hydra.output_subdir: null``). Hydra writes its copy before the task runs, so a start that
the task then refuses would already have replaced the snapshot of the run in the dir. Here
nothing is written into a dir that holds a run until the start is accepted.

The rules (``open_run``):
- ``resume=false`` in a dir that holds a run is refused (FileExistsError).
- ``resume=true`` takes the run's saved config. Overrides that agree with it are fine; one
  that would change it is refused (``ResumeRefused``, a ValueError naming the key and both
  values) unless its key is in ``CHANGEABLE_ON_RESUME``. Training continues from the newest
  intact checkpoint (from step 0 when the run was killed before its first one).
- A finished run (results.json written) resumes only to be extended: ``trainer.max_steps``
  above its step. Its LR schedule keeps its length (``optim.schedule_steps``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from ssm.train.checkpoint import newest_intact, remove_temporary_files
from ssm.train.loggers import JsonlWriter

HISTORY = "history.jsonl"
SNAPSHOT = ".hydra"
CHECKPOINTS = "checkpoints"

# Settings that say how a run is carried out rather than what is trained: a resume may change
# these, and history.jsonl records each change. Every other setting is the run itself.
CHANGEABLE_ON_RESUME = (
    "trainer.max_steps",        # extend (or shorten, not below the step reached)
    "trainer.num_workers", "trainer.progress", "trainer.device", "trainer.log_every",
    "trainer.checkpoint_every", "trainer.max_bad_fraction", "trainer.timing_warmup",
    "eval.enabled", "eval.batch_size",
    "logger",                   # the group (logger=jsonl) and its keys (logger.mode=...)
    "optimize_metric",
)
# Keys that steer this start and are no part of the run.
CONTROL = ("resume",)


class ResumeRefused(ValueError):
    """resume=true that would not continue the same run (an override that changes it, or a
    finished run that is not being extended)."""


@dataclass
class HydraStart:
    """What Hydra knows of this start: its overrides, group choices and its own config."""

    overrides: list[str]
    choices: dict
    hydra_yaml: str
    overrides_yaml: str
    output_subdir: Optional[str]

    @classmethod
    def current(cls) -> Optional["HydraStart"]:
        """This process's Hydra start; None when the task was called without Hydra."""
        if not HydraConfig.initialized():
            return None
        hydra = HydraConfig.get()
        return cls(overrides=list(hydra.overrides.task),
                   choices=OmegaConf.to_container(hydra.runtime.choices),
                   hydra_yaml=OmegaConf.to_yaml(HydraConfig.instance().cfg),
                   overrides_yaml=OmegaConf.to_yaml(hydra.overrides.task),
                   output_subdir=hydra.output_subdir)


@dataclass
class RunStart:
    """How this start begins or continues the run in ``run_dir``."""

    run_dir: Path
    cfg: DictConfig                 # the config this start trains with
    choices: dict                   # the run's config-group choices (Hydra's, first start)
    resumed: bool
    overrides: Optional[list[str]]  # this start's command-line overrides (None: no Hydra)
    step: int = 0                   # the step training continues from
    checkpoint: Optional[Path] = None
    state: Optional[dict] = None    # the checkpoint's contents (rank 0; the others load it)
    changes: dict = field(default_factory=dict)  # key -> [the run's value, this start's]
    warnings: list[str] = field(default_factory=list)  # to log once the start is accepted

    def without_state(self) -> "RunStart":
        """A copy to send to the other ranks (each loads the checkpoint itself)."""
        return replace(self, state=None)


def holds_run(run_dir: Path) -> bool:
    """A start was accepted here before (history.jsonl), or, in a run dir older than
    history.jsonl, training left checkpoints, metrics or results."""
    run_dir = Path(run_dir)
    return (any((run_dir / name).exists() for name in (HISTORY, "metrics.jsonl", "results.json"))
            or any((run_dir / CHECKPOINTS).glob("*.pt")))


def open_run(run_dir: Path, cfg: DictConfig, hydra: Optional[HydraStart]) -> RunStart:
    """Decide how this start goes. Writes nothing into a dir that holds a run; a fresh dir
    gets its ``.hydra/`` snapshot now (so a job that fails early still shows its config).

    Raises FileExistsError (a run is there and resume=false), FileNotFoundError (resume=true
    and no run), ResumeRefused, or CheckpointError (checkpoints, none intact).
    """
    run_dir = Path(run_dir)
    if hydra is not None and hydra.output_subdir is not None:
        raise ValueError(f"hydra.output_subdir must stay null for training (got "
                         f"{hydra.output_subdir!r}): the train task writes {SNAPSHOT}/ itself, "
                         "once it has checked that the start may change the run dir")
    if not cfg.resume:
        if holds_run(run_dir):
            raise FileExistsError(f"{run_dir} already holds a run; pass resume=true to continue "
                                  "it or choose another hydra.run.dir")
        _write_snapshot(run_dir, cfg, hydra)
        return RunStart(run_dir, cfg, hydra.choices if hydra else {}, resumed=False,
                        overrides=hydra.overrides if hydra else None)
    if not holds_run(run_dir):
        raise FileNotFoundError(f"resume=true but {run_dir} holds no run to continue (no "
                                f"{HISTORY}, checkpoint or metrics); point hydra.run.dir at "
                                "the run to continue")
    saved_path = run_dir / SNAPSHOT / "config.yaml"
    if not saved_path.is_file():
        raise FileNotFoundError(f"resume=true but {saved_path} is missing: the config the run "
                                "started with is unknown, so it cannot be continued")
    saved_choices = _saved_choices(run_dir)
    effective, changes = reconcile(OmegaConf.load(saved_path), cfg,
                                   hydra.overrides if hydra else None, saved_choices,
                                   hydra.choices if hydra else {}, run_dir)
    start = RunStart(run_dir, effective, saved_choices, resumed=True,
                     overrides=hydra.overrides if hydra else None, changes=changes)
    found = newest_intact(run_dir / CHECKPOINTS)
    if found is not None:
        start.checkpoint, start.state, problems = found
        start.step = int(start.state["step"])
        if problems:
            start.warnings.append(
                f"{'; '.join(problems)}. Resuming from {start.checkpoint} (step {start.step}), "
                "the newest intact checkpoint; the next save replaces last.pt")
    _check_steps(start, int(effective.trainer.max_steps))
    return start


def _check_steps(start: RunStart, max_steps: int) -> None:
    """A resume trains on, or at least finishes: refuse one that would do neither."""
    step, key = start.step, "trainer.max_steps"
    if step > max_steps:
        raise ResumeRefused(f"{key}={max_steps} is below the step the run in {start.run_dir} "
                            f"reached ({step}); pass {key} >= {step}")
    if step == max_steps and (start.run_dir / "results.json").exists():
        raise ResumeRefused(f"the run in {start.run_dir} is finished (step {step} of {key}="
                            f"{max_steps}): to train it further pass {key}=N with N > {step} "
                            "(its LR schedule keeps its length); to evaluate it again run "
                            "experiments/evaluate.py")
    if key in start.changes and OmegaConf.select(start.cfg, "optim.schedule_steps") is None:
        # The schedule is part of the run: extending it must not stretch its cosine.
        old = start.changes[key][0]
        OmegaConf.update(start.cfg, "optim.schedule_steps", old, force_add=True)
        start.changes["optim.schedule_steps"] = [None, old]


_ABSENT = object()


def reconcile(saved: DictConfig, asked: DictConfig, overrides: Optional[list[str]],
              saved_choices: dict, asked_choices: dict, run_dir: Path = Path(".")):
    """(config, changes): the run's ``saved`` config with the changes this resume may make.

    ``overrides`` are this start's command-line overrides: only what they touch is compared
    (the defaults a bare ``resume=true`` composes are not asked for). Without Hydra (None)
    every setting of ``asked`` counts as asked for. A group override (``model/text_encoder=
    transformer``) is compared by the group's choice. Raises ResumeRefused naming each key
    that would change the run, with both values.
    """
    effective = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    changes, conflicts = {}, []
    for key, is_group in _asked_keys(saved, asked, overrides, asked_choices, saved_choices):
        path = key.replace("/", ".")
        if is_group:
            old, new = saved_choices.get(key), asked_choices.get(key)
        else:
            old, new = _value(saved, path), _value(asked, path)
        if old == new:
            continue
        if _changeable(path):
            _apply(effective, asked, path)
            changes[key] = [_plain(old), _plain(new)]
        else:
            conflicts.append(f"{key} (the run has {_show(old)}, this start asks {_show(new)})")
    if conflicts:
        raise ResumeRefused(
            f"resume=true continues the run in {run_dir} with the config it started with, and "
            f"{'this override' if len(conflicts) == 1 else 'these overrides'} would change it: "
            f"{'; '.join(conflicts)}. A resume may change only "
            f"{', '.join(CHANGEABLE_ON_RESUME)}; train anything else as a new run (another "
            "hydra.run.dir)")
    return effective, changes


def _asked_keys(saved, asked, overrides, asked_choices, saved_choices):
    """(key, is_group) for every setting this start asks for."""
    if overrides is None:
        keys = sorted(set(_leaves(saved)) | set(_leaves(asked)))
        return [(k, False) for k in keys if k.split(".")[0] not in CONTROL]
    asked_keys = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in CONTROL or key.split(".")[0].split("/")[0] == "hydra":
            continue
        # A group is compared by its choice when the run's choices are known.
        asked_keys.append((key, key in asked_choices and key in saved_choices))
    return asked_keys


def _leaves(cfg: DictConfig) -> dict:
    """{dotted key: resolved value} of every leaf (an empty dict or list is a leaf)."""
    leaves = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            leaves[prefix] = node
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return leaves


def _value(cfg: DictConfig, path: str):
    value = OmegaConf.select(cfg, path, default=_ABSENT, throw_on_missing=False)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _changeable(path: str) -> bool:
    return any(path == key or path.startswith(key + ".") for key in CHANGEABLE_ON_RESUME)


def _apply(effective: DictConfig, asked: DictConfig, path: str) -> None:
    """Set ``path`` in ``effective`` as ``asked`` has it (or delete it, when absent there)."""
    value = OmegaConf.select(asked, path, default=_ABSENT, throw_on_missing=False)
    if value is _ABSENT:
        parent, _, last = path.rpartition(".")
        node = OmegaConf.select(effective, parent) if parent else effective
        if isinstance(node, DictConfig) and last in node:
            del node[last]
        return
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    OmegaConf.update(effective, path, value, merge=False, force_add=True)


def _plain(value):
    return None if value is _ABSENT else value


def _show(value) -> str:
    if value is _ABSENT:
        return "no such setting"
    return value if isinstance(value, str) else json.dumps(value)


def _saved_choices(run_dir: Path) -> dict:
    """The run's config-group choices from its .hydra/hydra.yaml ({} without one)."""
    path = run_dir / SNAPSHOT / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices", default=None)
    return OmegaConf.to_container(choices) if choices is not None else {}


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a kill leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_snapshot(run_dir: Path, cfg: DictConfig, hydra: Optional[HydraStart]) -> None:
    """``.hydra/`` as Hydra would have written it for this (first) start."""
    folder = run_dir / SNAPSHOT
    write_text_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    if hydra is not None:
        write_text_atomic(folder / "hydra.yaml", hydra.hydra_yaml)
        write_text_atomic(folder / "overrides.yaml", hydra.overrides_yaml)


def record_event(run_dir: Path, event: str, **fields) -> None:
    """Append one line to the run's history.jsonl."""
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "event": event,
            **fields}
    with open(Path(run_dir) / HISTORY, "a") as f:
        f.write(json.dumps(line, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def accept(start: RunStart) -> list[tuple[str, str]]:
    """Write this start, now accepted, into the run's record; returns (level, message) pairs
    for the run's log. Removes what killed writes left; on a resume also drops the
    metrics.jsonl lines past its step (training recomputes them), keeps a finished run's
    results.json as results_step_N.json, and writes the changes it made into
    .hydra/config.yaml. Last, a ``start`` or ``resume`` line goes into history.jsonl."""
    run_dir, notes = start.run_dir, [("warning", w) for w in start.warnings]
    removed = [p for folder in (run_dir / CHECKPOINTS, run_dir, run_dir / SNAPSHOT)
               for p in remove_temporary_files(folder)]
    if removed:
        notes.append(("warning", f"removed {len(removed)} temporary file(s) that interrupted "
                                 f"writes left: {', '.join(p.name for p in removed)}"))
    if start.resumed:
        dropped = JsonlWriter(run_dir / "metrics.jsonl").truncate_after(start.step)
        if dropped:
            notes.append(("info", f"metrics.jsonl: dropped {dropped} line(s) past step "
                                  f"{start.step} or cut short; training recomputes them"))
        results = run_dir / "results.json"
        if results.exists():
            kept = run_dir / f"results_step_{start.step:07d}.json"
            os.replace(results, kept)
            notes.append(("info", f"the results at step {start.step} are kept as {kept.name}"))
        if start.changes:
            write_text_atomic(run_dir / SNAPSHOT / "config.yaml", OmegaConf.to_yaml(start.cfg))
    checkpoint = (str(start.checkpoint.relative_to(run_dir)) if start.checkpoint is not None
                  else None)
    record_event(run_dir, "resume" if start.resumed else "start", step=start.step,
                 checkpoint=checkpoint, overrides=start.overrides, changes=start.changes,
                 warnings=start.warnings)
    return notes
