"""The towers the dense_captions sweep compares, as its preset builds them."""
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ssm.encoders import parameter_report
from run_config import CONF


def test_dense_study_encoders_are_matched_within_ten_percent():
    """The towers the dense_captions sweep compares, as its preset builds them (unshrunk)."""
    encoders = {}
    for name in ("mamba", "bimamba", "transformer_full", "transformer_clip", "transformer_77"):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", overrides=["+experiment=dense_captions",
                                                          f"model/text_encoder={name}"])
        encoders[name] = instantiate(cfg.model.text_encoder)
    table, matched = parameter_report(encoders)
    assert matched, table
    assert encoders["transformer_clip"].context_length == 343
    assert encoders["transformer_77"].context_length == 77
    assert encoders["transformer_full"].context_length is None
