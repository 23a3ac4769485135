"""Fixtures of the task tests."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from run_config import CONF, shrunk


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
