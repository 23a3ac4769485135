"""init_from and freeze: shared weights copied, new heads fresh, shapes checked, frozen
towers left out of the optimiser and unchanged by training."""
import pytest
import torch

from ssm.decoders import MambaCaptionDecoder
from ssm.encoders import ConvNetImageEncoder, MambaTextEncoder
from ssm.models import CLIP
from ssm.train.checkpoint import save_checkpoint
from ssm.train.optim import OptimizerSpec
from ssm.train.warm_start import freeze_towers, load_weights, warm_start


def _model(decoder=False, text_width=16, seed=0):
    torch.manual_seed(seed)
    image = ConvNetImageEncoder(width=16, channels=(8, 16))
    text = MambaTextEncoder(width=text_width, depth=1, d_state=4)
    dec = MambaCaptionDecoder(width=16, depth=1, d_state=4, image_width=16) if decoder else None
    return CLIP(image, text, embed_dim=8, decoder=dec)


def test_shared_weights_load_and_the_new_decoder_stays_fresh(tmp_path):
    pretrained = _model(seed=1)
    save_checkpoint({"model": pretrained.state_dict(), "step": 5}, tmp_path / "last.pt")
    model = _model(decoder=True, seed=2)
    fresh_decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    keys = load_weights(model, tmp_path / "last.pt")
    for name, value in pretrained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    for name, value in model.decoder.state_dict().items():
        assert torch.equal(value, fresh_decoder[name]), name
    assert keys["fresh"] and all(k.startswith("decoder.") for k in keys["fresh"])
    assert not keys["unused"] and len(keys["loaded"]) == len(pretrained.state_dict())


def test_mismatched_shapes_and_non_checkpoints_are_named(tmp_path):
    save_checkpoint({"model": _model(text_width=32).state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="text_encoder.embed.weight"):
        load_weights(_model(), tmp_path / "wide.pt")
    save_checkpoint({"weights": {}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_weights(_model(), tmp_path / "odd.pt")
    with pytest.raises(FileNotFoundError):
        load_weights(_model(), tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="freeze takes"):
        warm_start(_model(), None, {"decoder": True})


def test_frozen_towers_do_not_train():
    model = _model(decoder=True)
    assert freeze_towers(model, image_encoder=True) == ["image_encoder"]
    optimizer, _ = OptimizerSpec(lr=1e-2, warmup_steps=0).build(model, 10)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in model.image_encoder.parameters())
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    decoder_before = model.decoder.embed.weight.clone()
    images = torch.rand(2, 3, 32, 32)
    tokens = torch.randint(0, 256, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    out = model(images, tokens, mask)
    model.caption_logits(out, tokens, mask).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.image_encoder.state_dict().items())
    assert not torch.equal(model.decoder.embed.weight, decoder_before)
