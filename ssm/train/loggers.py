"""Where metrics go: metrics.jsonl always (rank 0), and optionally wandb."""
from __future__ import annotations

import json
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
        """Drop records past ``step`` (a resumed run recomputes them); returns how many."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


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
