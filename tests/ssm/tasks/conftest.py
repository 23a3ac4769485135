"""Fixtures shared by the task tests: one tiny finished run, made once per session, and
HydraConfig set as in a real run."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from run_config import CONF, compose_train, shrunk
from ssm.tasks import train


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


@pytest.fixture
def hydra_run():
    """HydraConfig set as in a real run, so results.json records the group choices."""
    def _set(*overrides):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", overrides=shrunk(*overrides),
                          return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    yield _set
    HydraConfig.instance().cfg = None
