"""The caption decoders: teacher forcing, decode steps against it, padding, the image's
part, caches, the matching rule on the real configs, and bad input."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from decoder_cases import KINDS, PATCHES, image_features, make_decoder
from kernels.selective_scan.testing import relative_error
from ssm.decoders import MambaCaptionDecoder, TransformerCaptionDecoder
from ssm.encoders import MATCH_TOLERANCE, parameter_count, parameter_spread, parameters_matched
from run_config import CONF


def _tokens(b, l, seed=2):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (b, l), generator=g)
    tokens[:, 0] = 256  # BOS
    return tokens, torch.ones(b, l, dtype=torch.bool)


def test_logits_shape_and_every_parameter_learns(decoder):
    pooled, patches = image_features(3)
    tokens, mask = _tokens(3, 7)
    logits = decoder(pooled, patches, tokens, mask)
    assert logits.shape == (3, 7, 259)
    logits.logsumexp(-1).sum().backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_the_image_steers_every_position(decoder):
    """Two images, one caption: the logits differ at every caption position (prefix,
    initial state and cross-attention all reach the first token already)."""
    pooled, patches = image_features(2)
    tokens, mask = _tokens(1, 6)
    with torch.no_grad():
        logits = decoder(pooled, patches, tokens.expand(2, -1), mask.expand(2, -1))
    assert (logits[0] - logits[1]).abs().amax(-1).min() > 1e-4


@pytest.mark.parametrize("kind", ["mamba_state", "mamba_patch_state"])
def test_initial_state_gradients_reach_the_image(kind):
    """The state conditionings train through the scan's initial_state gradient; the
    patch-state one reaches every patch, the pooled one never reads them."""
    decoder = make_decoder(kind)
    pooled, patches = image_features(2)
    pooled.requires_grad_(True)
    patches.requires_grad_(True)
    tokens, mask = _tokens(2, 5)
    decoder(pooled, patches, tokens, mask).square().sum().backward()
    assert pooled.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in decoder.state_in.parameters())
    if kind == "mamba_patch_state":
        assert bool((patches.grad.abs().sum(-1) > 0).all())
    else:
        assert patches.grad is None or patches.grad.abs().sum() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_image_dropout_gives_rows_the_null_image_in_training_only(kind):
    """With image_dropout p each training row reads either its image or the null image
    (zeros), both seen in one batch at p = 0.5; eval never drops."""
    decoder = make_decoder(kind)
    decoder.image_dropout = 0.5
    pooled, patches = image_features(16)
    tokens, mask = _tokens(16, 5)
    with torch.no_grad():
        decoder.eval()
        image = decoder(pooled, patches, tokens, mask)
        null = decoder(*decoder.null_image(pooled, patches), tokens, mask)
        decoder.train()
        torch.manual_seed(3)
        dropped = decoder(pooled, patches, tokens, mask)
    same_image = (dropped - image).abs().amax((1, 2)) == 0
    same_null = (dropped - null).abs().amax((1, 2)) == 0
    assert bool((same_image ^ same_null).all())       # every row is one or the other
    assert 0 < int(same_null.sum()) < 16
    decoder.eval()
    assert torch.equal(decoder(pooled, patches, tokens, mask), image)


def test_causal_and_padding_free(decoder):
    """A position's logits depend on the tokens up to it only, and right padding changes
    no real position."""
    pooled, patches = image_features(3)
    tokens, mask = _tokens(3, 9)
    lengths = torch.tensor([9, 5, 2])
    mask = torch.arange(9)[None, :] < lengths[:, None]
    with torch.no_grad():
        padded = decoder(pooled, patches, tokens, mask)
        for i, k in enumerate(lengths.tolist()):
            alone = decoder(pooled[i:i + 1], patches[i:i + 1], tokens[i:i + 1, :k], mask[i:i + 1, :k])
            assert relative_error(padded[i:i + 1, :k], alone) < 1e-5


def test_decode_steps_equal_teacher_forcing(decoder):
    """start + step through the cache gives the logits of the full forward, position by
    position (Mamba.step's conv and state updates; the Transformer's KV cache)."""
    pooled, patches = image_features(2)
    tokens, mask = _tokens(2, 8)
    with torch.no_grad():
        full = decoder(pooled, patches, tokens, mask)
        cache = decoder.start(pooled, patches, max_new_tokens=8)
        steps = torch.stack([decoder.step(tokens[:, t], cache) for t in range(8)], 1)
    assert relative_error(steps, full) < 1e-5


def test_cache_select_reorders_rows(decoder):
    pooled, patches = image_features(3)
    tokens, _ = _tokens(3, 4)
    with torch.no_grad():
        cache = decoder.start(pooled, patches, 6)
        for t in range(3):
            decoder.step(tokens[:, t], cache)
        order = torch.tensor([2, 0, 2])
        picked = decoder.step(tokens[order, 3], cache.select(order))
        direct = decoder.step(tokens[:, 3], cache)
    assert relative_error(picked, direct[order]) < 1e-6


def test_mamba_cache_is_constant_and_the_kv_cache_grows():
    pooled, patches = image_features(2)
    sizes = {kind: [make_decoder(kind).start(pooled, patches, n).nbytes() for n in (8, 64)]
             for kind in KINDS}
    assert sizes["mamba"][0] == sizes["mamba"][1] and sizes["mamba_state"][0] == sizes["mamba_state"][1]
    small, large = sizes["transformer"]
    kv = 2 * 2 * 2 * 16  # keys and values, 2 layers, batch 2, width 16: float32 per position
    assert large - small == kv * (64 - 8) * 4


def test_the_configured_decoders_are_matched_in_parameters():
    """conf/model/decoder/*.yaml as training builds them: within ssm.encoders' 10% rule."""
    counts = {}
    for kind in KINDS:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"model/decoder={kind}"])
        counts[kind] = parameter_count(instantiate(cfg.model.decoder))
    print(counts, f"spread {parameter_spread(counts.values()):.1%}")
    assert parameters_matched(counts.values(), MATCH_TOLERANCE), counts


def test_bad_input_is_named():
    decoder = make_decoder("mamba")
    pooled, patches = image_features(2)
    tokens, mask = _tokens(2, 4)
    with pytest.raises(ValueError, match="image_pooled must have shape"):
        decoder(pooled[:, :5], patches, tokens, mask)
    with pytest.raises(ValueError, match="image_patches must have shape"):
        decoder(pooled, patches[:1], tokens, mask)
    with pytest.raises(ValueError, match="batch size"):
        decoder(pooled, patches, tokens[:1], mask[:1])
    with pytest.raises(ValueError, match="token ids"):
        decoder(pooled, patches, tokens + 300, mask)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        decoder.start(pooled, patches, 0)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        MambaCaptionDecoder(conditioning="cross")
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValueError, match=r"image_dropout must be a number in \[0, 1\)"):
            MambaCaptionDecoder(image_dropout=bad)
        with pytest.raises(ValueError, match=r"image_dropout must be a number in \[0, 1\)"):
            TransformerCaptionDecoder(image_dropout=bad)
    with pytest.raises(ValueError, match="multiple of heads"):
        TransformerCaptionDecoder(width=10, heads=4)
    transformer = make_decoder("transformer")
    cache = transformer.start(pooled, patches, 2)
    transformer.step(tokens[:, 0], cache)
    transformer.step(tokens[:, 1], cache)
    with pytest.raises(ValueError, match="start a new one"):
        transformer.step(tokens[:, 2], cache)
    assert PATCHES == patches.shape[1]
