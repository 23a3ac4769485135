"""Where a run's records go: metrics.jsonl always (rank 0), optionally wandb, and the
run's text log, train.log."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional


class JsonlWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> int:
        """Keep only the records up to ``step`` (a resumed run recomputes the later ones),
        dropping too any line a kill cut short; returns how many lines were dropped. The
        file is rewritten through a temporary file and a rename, so a kill here loses
        nothing."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        return len(lines) - len(kept)


def _step_of(line: str) -> Optional[int]:
    """The step of one metrics.jsonl line; None for a blank or cut-short line."""
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


class NullLogger:
    """``logger=jsonl``: nothing beyond metrics.jsonl."""

    def start(self, config: dict, run_dir: Path, group: Optional[str]) -> None:
        pass

    def log(self, record: dict, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """Weights & Biases, offline by default. The resolved config is logged, runs of a
    sweep share a group, and ``finish`` ends the run (once per job of a multirun)."""

    def __init__(self, project: str = "ssm-clip", mode: str = "offline",
                 entity: Optional[str] = None, tags: tuple = ()):
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"logger.mode must be online, offline or disabled, got {mode!r}")
        self.project, self.mode, self.entity, self.tags = project, mode, entity, list(tags)
        self.run = None

    def start(self, config, run_dir, group):
        import wandb
        self.run = wandb.init(project=self.project, mode=self.mode, entity=self.entity,
                              config=config, dir=str(run_dir), group=group, tags=self.tags,
                              reinit="finish_previous")

    def log(self, record, step):
        if self.run is not None:
            self.run.log(record, step=step)

    def finish(self):
        if self.run is not None:
            self.run.finish()
            self.run = None


# Hydra's job-log format, so train.log reads the same however the task was started.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class _Held(logging.Handler):
    """Keeps records in memory until the start they belong to is accepted."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class RunLog:
    """The run's ``train.log``, for the duration of a ``with`` block.

    Under Hydra the job log already writes ``<run dir>/train.log`` (its ``file`` handler on
    the root logger); elsewhere (the task called directly, or Hydra's job logging turned off)
    a handler for it is added here. The ``ssm`` loggers log at INFO or finer meanwhile.

    ``held=True`` is for a start in a directory that already holds a run: until ``accept()``
    the records meant for train.log are kept in memory (the console still shows them), and
    leaving the block without accepting drops them, so a refused start leaves train.log as
    it was. ``enabled=False`` (ranks other than 0) does nothing.
    """

    def __init__(self, path: Path, enabled: bool = True, held: bool = False):
        self.path, self.enabled, self.held = Path(path), enabled, held
        self._root = logging.getLogger()
        self._hydras: list[logging.Handler] = []
        self._added: list[logging.Handler] = []
        self._buffer: Optional[_Held] = None
        self._ssm = logging.getLogger("ssm")
        self._ssm_level = self._ssm.level

    def __enter__(self) -> "RunLog":
        if not self.enabled:
            return self
        target = os.path.abspath(self.path)  # as logging.FileHandler stores its file
        self._hydras = [h for h in self._root.handlers if isinstance(h, logging.FileHandler)
                        and h.baseFilename == target]
        if not self._root.handlers:
            # Adding a handler retires logging's last resort, which printed warnings.
            self._add(logging.StreamHandler(), logging.WARNING)
        if not self._hydras:
            self._add(logging.FileHandler(self.path, delay=True), logging.INFO,
                      attach=not self.held)
        if self._ssm.getEffectiveLevel() > logging.INFO:
            self._ssm.setLevel(logging.INFO)
        if self.held:
            for handler in self._hydras:
                self._root.removeHandler(handler)
            self._buffer = _Held()
            self._root.addHandler(self._buffer)
        return self

    def _add(self, handler: logging.Handler, level: int, attach: bool = True) -> None:
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._added.append(handler)
        if attach:
            self._root.addHandler(handler)

    def _files(self) -> list[logging.Handler]:
        return self._hydras + [h for h in self._added if isinstance(h, logging.FileHandler)]

    def accept(self) -> None:
        """The start goes ahead: write the held records to train.log, and log there from now."""
        if self._buffer is None:
            return
        self._root.removeHandler(self._buffer)
        for handler in self._files():
            self._root.addHandler(handler)
            for record in self._buffer.records:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self._buffer = None

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        if self._buffer is not None:  # never accepted: drop what was held
            self._root.removeHandler(self._buffer)
            self._buffer = None
            for handler in self._hydras:
                self._root.addHandler(handler)
        for handler in self._added:
            self._root.removeHandler(handler)
            handler.close()
        self._ssm.setLevel(self._ssm_level)
