"""Faults injected by the tests from outside the library: nothing in ssm/ or conf/ knows
of them. They wrap methods of ``ssm.train.loop.Trainer``.

In the test's own process::

    inject(nan_at_step=3, patch=monkeypatch.setattr)

In a subprocess, as a launcher in front of an entry point::

    FAULT_NAN_AT_STEP=2 python tests/faults.py experiments/train.py [overrides]

Environment (the launcher) or keywords (``inject``):
  FAULT_NAN_AT_STEP=k   the loss of optimizer step k is NaN, as if training diverged
  FAULT_KILL_AT_STEP=k  SIGKILL right after step k is logged, before its checkpoint
  FAULT_KILL_IN_SAVE=k  SIGKILL inside the checkpoint save of step k, just before one of its
                        files is renamed into place: with FAULT_KILL_AFTER_RENAMES=r (default
                        0), after r of them were (0: the state is in a temporary file only)
  FAULT_JOBS=0,3        only in these job numbers of a multirun (default: every job)
"""
import os
import runpy
import signal
import sys
from pathlib import Path


def _selected(jobs) -> bool:
    if jobs is None:
        return True
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.initialized() and HydraConfig.get().job.get("num") in jobs


class _RenameKiller:
    """Stands in for the ``os`` module inside ssm.train.checkpoint: every name is the real
    one's, but while ``armed`` is r, the (r+1)-th rename kills the process first."""

    def __init__(self, real):
        self._real, self.armed = real, None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def replace(self, src, dst):
        if self.armed is not None:
            if self.armed == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            self.armed -= 1
        return self._real.replace(src, dst)


def inject(nan_at_step=None, kill_at_step=None, kill_in_save=None, kill_after_renames=0,
           jobs=None, patch=setattr) -> None:
    """Wrap Trainer._loss (NaN), Trainer._log (kill) and Trainer.save with the renames of
    ssm.train.checkpoint (kill in a save); ``patch(obj, name, value)`` sets them
    (``monkeypatch.setattr`` undoes it after the test)."""
    from ssm.train import checkpoint
    from ssm.train.loop import Trainer

    if nan_at_step is not None:
        loss = Trainer._loss

        def diverging(self, *batch):
            value, terms = loss(self, *batch)
            if self.step + 1 == nan_at_step and _selected(jobs):
                value = value * float("nan")
            return value, terms
        patch(Trainer, "_loss", diverging)
    if kill_at_step is not None:
        log = Trainer._log

        def crashing(self, record):
            log(self, record)
            if self.step == kill_at_step and _selected(jobs):
                os.kill(os.getpid(), signal.SIGKILL)
        patch(Trainer, "_log", crashing)
    if kill_in_save is not None:
        save, renames = Trainer.save, _RenameKiller(os)
        patch(checkpoint, "os", renames)

        def killed_saving(self, *args, **kwargs):
            if self.step == kill_in_save and _selected(jobs):
                renames.armed = kill_after_renames
            try:
                save(self, *args, **kwargs)
            finally:
                renames.armed = None
        patch(Trainer, "save", killed_saving)


def _from_environment() -> dict:
    step = lambda name: int(os.environ[name]) if os.environ.get(name) else None  # noqa: E731
    jobs = os.environ.get("FAULT_JOBS")
    return {"nan_at_step": step("FAULT_NAN_AT_STEP"), "kill_at_step": step("FAULT_KILL_AT_STEP"),
            "kill_in_save": step("FAULT_KILL_IN_SAVE"),
            "kill_after_renames": step("FAULT_KILL_AFTER_RENAMES") or 0,
            "jobs": {int(j) for j in jobs.split(",")} if jobs else None}


if __name__ == "__main__":
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    sys.path[0] = str(script.parent)  # as if the script had been run itself
    # This checkout's ssm, not another one an editable install may point at.
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
    inject(**_from_environment())
    runpy.run_path(str(script), run_name="__main__")
