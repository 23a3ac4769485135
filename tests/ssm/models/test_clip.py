"""The CLIP model, its heads and the combined objective, end to end on tiny towers."""
import math

import pytest
import torch

from ssm import losses
from ssm.data import ByteTokenizer
from ssm.encoders import (BiMambaTextEncoder, ConvNetImageEncoder, MambaTextEncoder,
                          TransformerTextEncoder, ViTImageEncoder)
from ssm.models import CLIP
from ssm.objective import Objective

CAPTIONS = ["a red circle", "a blue square on the left", "two green triangles",
            "a small yellow star", "a large purple hexagon", "an orange cross at the top"]


def _towers(text="mamba", image="convnet"):
    torch.manual_seed(0)
    text_encoder = {
        "mamba": lambda: MambaTextEncoder(width=32, depth=1, d_state=8),
        "bimamba": lambda: BiMambaTextEncoder(width=32, depth=1, d_state=8),
        "transformer": lambda: TransformerTextEncoder(width=32, depth=1, heads=2, max_length=64),
    }[text]()
    image_encoder = {
        "convnet": lambda: ConvNetImageEncoder(width=32, channels=(8, 16)),
        "vit": lambda: ViTImageEncoder(image_size=16, patch_size=8, width=32, depth=1, heads=2),
    }[image]()
    return image_encoder, text_encoder


def _batch(b=6):
    tokens, mask = ByteTokenizer().batch_encode(CAPTIONS[:b], max_length=32)
    images = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return images, tokens, mask


def test_features_are_normalised_and_scale_initialised():
    model = CLIP(*_towers(), embed_dim=16)
    out = model(*_batch())
    assert out.image_features.shape == out.text_features.shape == (6, 16)
    torch.testing.assert_close(out.image_features.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(out.text_features.norm(dim=-1), torch.ones(6))
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert out.logit_bias is None and out.image_patches is None
    torch.testing.assert_close(model.encode_text(*_batch()[1:]), out.text_features)


def test_logit_scale_is_clamped_to_ln_100():
    model = CLIP(*_towers(), embed_dim=16)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert math.isclose(model.logit_scale.item(), math.log(100.0), rel_tol=1e-6)


def test_itc_objective_is_the_itc_loss():
    model = CLIP(*_towers(), embed_dim=16)
    images, tokens, mask = _batch()
    out = model(images, tokens, mask)
    total, terms = Objective(itc=1.0)(model, out, tokens, mask)
    expected = losses.itc_loss(out.image_features, out.text_features, out.logit_scale)
    torch.testing.assert_close(total, expected)
    assert set(terms) == {"itc"}


@pytest.mark.parametrize("text,image", [("mamba", "convnet"), ("transformer", "vit"),
                                        ("bimamba", "vit")])
def test_all_terms_combine_with_their_weights(text, image):
    lm = text != "bimamba"
    model = CLIP(*_towers(text, image), embed_dim=16, init_logit_bias=-10.0, itm_head=True,
                 text_lm_head=lm)
    objective = Objective(itc=1.0, siglip=0.5, cosine=0.25, text_lm=0.3 if lm else 0.0, itm=2.0)
    images, tokens, mask = _batch()
    out = model(images, tokens, mask)
    total, terms = objective(model, out, tokens, mask, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"itc", "siglip", "cosine", "itm"} | ({"text_lm"} if lm else set())
    weighted = sum(objective.weights[k] * v for k, v in terms.items())
    torch.testing.assert_close(total.detach(), weighted)
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_a_few_steps_fit_a_small_batch():
    """Everything together learns: ITC on six pairs falls well below chance (ln 6)."""
    model = CLIP(*_towers("mamba", "convnet"), embed_dim=16, itm_head=True, text_lm_head=True)
    objective = Objective(itc=1.0, text_lm=0.1, itm=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images, tokens, mask = _batch()
    first = None
    for step in range(25):
        out = model(images, tokens, mask)
        loss, terms = objective(model, out, tokens, mask,
                                generator=torch.Generator().manual_seed(step))
        first = terms["itc"].item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale()
    assert first > 1.0 and terms["itc"].item() < 0.3 * first


def test_configuration_errors_are_named():
    with pytest.raises(ValueError, match="text_lm_head needs a causal text encoder"):
        CLIP(*_towers("bimamba"), text_lm_head=True)
    model = CLIP(*_towers(), embed_dim=16)
    images, tokens, mask = _batch()
    out = model(images, tokens, mask)
    for objective, words in ((Objective(itm=1.0), "itm needs"),
                             (Objective(text_lm=1.0), "text_lm needs"),
                             (Objective(caption=1.0), "caption needs a caption decoder"),
                             (Objective(siglip=1.0), "siglip needs")):
        with pytest.raises(ValueError, match=words):
            objective(model, out, tokens, mask)
    with pytest.raises(ValueError, match="at least one loss weight"):
        Objective(itc=0.0)
    with pytest.raises(ValueError, match="lm is now text_lm"):
        Objective(lm=0.5)
    with pytest.raises(ValueError, match="caption_label_smoothing"):
        Objective(caption=1.0, caption_label_smoothing=1.0)
    with pytest.raises(ValueError, match="weight itc"):
        Objective(itc=-1.0)


def test_mismatched_towers_and_bad_images_are_named():
    model = CLIP(*_towers(), embed_dim=16)
    images, tokens, mask = _batch()
    with pytest.raises(ValueError, match="same batch size"):
        model(images[:4], tokens, mask)
    with pytest.raises(ValueError, match="3 channels"):
        model(images[:, :1], tokens, mask)
    vit_model = CLIP(*_towers(image="vit"), embed_dim=16)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        vit_model(torch.randn(6, 3, 12, 12), tokens, mask)
