"""Objects from config nodes, with the errors a user can act on."""
from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssm.objective import model_options


def build(node, **kwargs):
    """``hydra.utils.instantiate``, but a bad setting surfaces as the ValueError, TypeError
    or FileNotFoundError the target raised, not wrapped in InstantiationException."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, (ValueError, TypeError, FileNotFoundError)):
            raise exc.__cause__ from None
        raise


def build_model(cfg: DictConfig, objective):
    """CLIP from cfg.model, with the heads and logit initialisation the objective needs."""
    model = build(cfg.model, **model_options(objective))
    objective.check_model(model)
    return model
