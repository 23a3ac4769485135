"""Fixtures shared by the task tests: one tiny finished run, made once per session."""
import pytest

from ssm.tasks import train
from run_config import compose_train


def finished_run(folder, *overrides):
    """Train a shrunk run into ``folder`` (the task writes its .hydra/config.yaml, where
    checkpoint readers find it); returns last.pt's path."""
    cfg = compose_train("trainer.max_steps=2", "eval.enabled=false", *overrides)
    train(cfg, folder)
    return folder / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """checkpoints/last.pt of a two-step run of the default config, shrunk."""
    return finished_run(tmp_path_factory.mktemp("tiny_run"))
