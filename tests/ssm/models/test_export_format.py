"""The model export: safetensors + config.json, rebuilt without Hydra."""
import json

import pytest
import torch

from ssm.encoders import ConvNetImageEncoder, MambaTextEncoder
from ssm.models import CLIP, from_config, load_model, save_model

NODE = {"_target_": "ssm.models.CLIP", "embed_dim": 16, "text_lm_head": True,
        "image_encoder": {"_target_": "ssm.encoders.ConvNetImageEncoder", "width": 16,
                          "channels": [8, 16], "image_size": 32},
        "text_encoder": {"_target_": "ssm.encoders.MambaTextEncoder", "width": 16, "depth": 1,
                         "d_state": 4}}


def test_round_trip_gives_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = from_config(NODE)
    assert isinstance(model, CLIP) and isinstance(model.text_encoder, MambaTextEncoder)
    with torch.no_grad():
        model.logit_scale.fill_(1.234)  # not the init value: the weights must travel
    save_model(model, tmp_path, NODE, image_size=32)
    loaded, info = load_model(tmp_path)
    assert info["image_size"] == 32 and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    images, tokens = torch.rand(2, 3, 32, 32), torch.randint(0, 256, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, tokens, mask).text_features,
                                   model(images, tokens, mask).text_features)


def test_only_this_package_can_be_built(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        from_config({"_target_": "os.system", "command": "echo hi"})
    with pytest.raises(ValueError, match="does not name"):
        from_config({"_target_": "ssm.models.NoSuchThing"})
    assert isinstance(from_config({"_target_": "ssm.encoders.ConvNetImageEncoder",
                                   "width": 8, "channels": [8], "image_size": 16}),
                      ConvNetImageEncoder)


def test_missing_or_foreign_exports(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    save_model(from_config(NODE), tmp_path, NODE)
    config = json.loads((tmp_path / "config.json").read_text())
    config["format"] = "something-else"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format"):
        load_model(tmp_path)
