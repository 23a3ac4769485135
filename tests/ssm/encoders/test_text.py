"""Text encoders: shapes, padding invariance, pooling, direction, parameter matching."""
import pytest
import torch

from ssm.encoders import (BiMambaTextEncoder, MambaTextEncoder, TransformerTextEncoder,
                          parameter_count, parameter_report, parameter_spread, parameters_matched)

SMALL = {
    "mamba": lambda: MambaTextEncoder(width=32, depth=2, d_state=8),
    "bimamba": lambda: BiMambaTextEncoder(width=32, depth=2, d_state=8),
    "transformer": lambda: TransformerTextEncoder(width=32, depth=2, heads=4, max_length=64),
}


def _batch(b=3, l=20, vocab=259, lengths=(20, 9, 3), generator=None):
    tokens = torch.randint(0, 256, (b, l), generator=generator)
    mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    tokens[~mask] = 258  # PAD
    return tokens, mask


@pytest.fixture(params=list(SMALL))
def encoder(request):
    torch.manual_seed(0)
    return SMALL[request.param]()


def test_shapes(encoder):
    tokens, mask = _batch()
    assert encoder(tokens, mask).shape == (3, 32)
    assert encoder.forward_tokens(tokens, mask).shape == (3, 20, 32)


def test_extra_padding_changes_no_feature(encoder):
    """The padding-invariance bar: appended padding moves no feature by more than 1e-5."""
    tokens, mask = _batch()
    pad = torch.full((3, 17), 258)
    with torch.no_grad():
        before = encoder(tokens, mask)
        after = encoder(torch.cat([tokens, pad], 1),
                        torch.cat([mask, torch.zeros(3, 17, dtype=torch.bool)], 1))
    assert (before - after).abs().max() < 1e-5


def test_padding_content_is_ignored(encoder):
    """Whatever ids sit in the padded positions, the features stay the same."""
    tokens, mask = _batch()
    junk = tokens.clone()
    junk[~mask] = torch.randint(0, 256, (int((~mask).sum()),))
    with torch.no_grad():
        assert (encoder(tokens, mask) - encoder(junk, mask)).abs().max() < 1e-5


def test_direction(encoder):
    """Causal encoders: the first token's state ignores later tokens. The bidirectional
    one: it depends on them."""
    tokens, mask = _batch(lengths=(20, 20, 20))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 256
    with torch.no_grad():
        first = encoder.forward_tokens(tokens, mask)[:, 0]
        first_changed = encoder.forward_tokens(changed, mask)[:, 0]
    moved = (first - first_changed).abs().max().item()
    assert (moved == 0.0) if encoder.causal else (moved > 1e-4)


def test_causal_pooling_reads_the_last_real_token(encoder):
    tokens, mask = _batch()
    with torch.no_grad():
        states = encoder.forward_tokens(tokens, mask)
        pooled = encoder(tokens, mask)
    if encoder.causal:
        torch.testing.assert_close(pooled, states[torch.arange(3), mask.sum(1) - 1])
    else:
        torch.testing.assert_close(pooled[1], states[1, :9].mean(0))


def test_gradients_reach_every_parameter(encoder):
    tokens, mask = _batch()
    encoder(tokens, mask).square().sum().backward()
    missing = [n for n, p in encoder.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_default_encoders_are_matched_within_ten_percent():
    encoders = {"mamba": MambaTextEncoder(), "bimamba": BiMambaTextEncoder(),
                "transformer": TransformerTextEncoder()}
    table, matched = parameter_report(encoders)
    assert matched, table
    assert "| mamba |" in table and parameter_count(encoders["mamba"]) > 1_000_000


def test_parameter_report_flags_a_mismatch():
    _, matched = parameter_report({"small": MambaTextEncoder(width=32, depth=1),
                                   "large": MambaTextEncoder(width=64, depth=2)})
    assert not matched


def test_matched_means_largest_over_smallest_within_ten_percent():
    # 9.5% below the largest is 10.5% above the smallest: not matched (one rule, the ratio).
    assert parameter_spread([90.5, 100]) == pytest.approx(0.105, abs=1e-3)
    assert not parameters_matched([90.5, 100]) and parameters_matched([91, 100])
    assert parameters_matched([100, 109.9]) and not parameters_matched([100, 110.1])
    with pytest.raises(ValueError, match="positive"):
        parameter_spread([0, 5])


BAD = [
    ("id-out-of-vocab", lambda t, m: (t.masked_fill(t == t[0, 0], 300), m), ValueError, "vocab"),
    ("negative-id", lambda t, m: (t - 300, m), ValueError, "vocab"),
    ("mask-shape", lambda t, m: (t, m[:, :5]), ValueError, "mask must have"),
    ("mask-dtype", lambda t, m: (t, m.long()), TypeError, "bool"),
    ("all-padding-row", lambda t, m: (t, m & (torch.arange(3) != 1)[:, None]), ValueError,
     "all-padding"),
    ("left-padded", lambda t, m: (t, m.flip(1)), ValueError, "right-padded"),
    ("float-tokens", lambda t, m: (t.float(), m), TypeError, "integer"),
    ("tokens-1d", lambda t, m: (t[0], m[0]), ValueError, "tokens must have shape"),
]


@pytest.mark.parametrize("make,exc,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(encoder, make, exc, words):
    tokens, mask = _batch()
    with pytest.raises(exc, match=words):
        encoder(*make(tokens, mask))


def test_transformer_rejects_captions_longer_than_its_position_table():
    tokens, mask = _batch(l=80, lengths=(80, 5, 5))
    with pytest.raises(ValueError, match="max_length=64"):
        SMALL["transformer"]()(tokens, mask)


# --- pooling, the CLIP-like window, sinusoidal positions ------------------------------------

@pytest.mark.parametrize("pool", ["last", "mean", "attention"])
@pytest.mark.parametrize("name", list(SMALL))
def test_every_pool_ignores_padding(name, pool):
    torch.manual_seed(0)
    cls = {"mamba": MambaTextEncoder, "bimamba": BiMambaTextEncoder,
           "transformer": TransformerTextEncoder}[name]
    kwargs = dict(width=32, max_length=64) if name == "transformer" else dict(width=32, d_state=8)
    encoder = cls(depth=1, pool=pool, **kwargs)
    tokens, mask = _batch()
    with torch.no_grad():
        states = encoder.forward_tokens(tokens, mask)
        pooled = encoder(tokens, mask)
        padded = encoder(torch.cat([tokens, torch.full((3, 5), 258)], 1),
                         torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1))
    assert (pooled - padded).abs().max() < 1e-5
    if pool == "last":
        torch.testing.assert_close(pooled[1], states[1, 8])
    else:  # mean, and attention at its zero-query initialisation, average the real tokens
        torch.testing.assert_close(pooled[1], states[1, :9].mean(0))


def test_attention_pool_learns_its_query():
    encoder = MambaTextEncoder(width=32, depth=1, d_state=8, pool="attention")
    tokens, mask = _batch()
    encoder(tokens, mask).square().sum().backward()
    assert encoder.pool_query.grad is not None and encoder.pool_query.grad.abs().sum() > 0
    with torch.no_grad():
        encoder.pool_query.normal_()
        states = encoder.forward_tokens(tokens, mask)
        weights = (states[2, :3] @ encoder.pool_query / 32 ** 0.5).softmax(0)
        torch.testing.assert_close(encoder(tokens, mask)[2], weights @ states[2, :3])
    with pytest.raises(ValueError, match="pool"):
        MambaTextEncoder(width=32, pool="max")


def test_pool_option_leaves_the_default_initialisation_alone():
    """Adding pooling options must not move a default run: same weights, same draws."""
    torch.manual_seed(5)
    a = MambaTextEncoder(width=32, depth=1, d_state=8)
    torch.manual_seed(5)
    b = MambaTextEncoder(width=32, depth=1, d_state=8, pool="mean")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name


def test_context_window_reads_only_the_first_tokens():
    """A windowed tower sees a long caption as that caption cut to the window and ended
    with EOS, the way CLIP's tokenizer cuts it."""
    torch.manual_seed(1)
    windowed = TransformerTextEncoder(width=32, depth=1, heads=4, max_length=64,
                                      positions="sinusoidal", context_length=10)
    tokens, mask = _batch(l=20, lengths=(20, 10, 4))
    cut = tokens[:, :10].clone()
    cut[0, 9] = 257
    with torch.no_grad():
        full = windowed(tokens, mask)
        window = windowed(cut, mask[:, :10])
        states = windowed.forward_tokens(tokens, mask)
    torch.testing.assert_close(full, window)
    assert states.shape == (3, 20, 32) and states[:, 10:].abs().max() == 0
    changed = tokens.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 256          # past the window: unseen
    with torch.no_grad():
        torch.testing.assert_close(windowed(changed, mask), full)
    with pytest.raises(ValueError, match="context_length"):
        TransformerTextEncoder(width=32, max_length=64, context_length=65)


def test_sinusoidal_positions_cost_the_same_parameters_at_any_length():
    short = TransformerTextEncoder(width=32, depth=1, max_length=64, positions="sinusoidal")
    long = TransformerTextEncoder(width=32, depth=1, max_length=2048, positions="sinusoidal")
    assert parameter_count(short) == parameter_count(long)
    tokens, mask = _batch()
    assert long(tokens, mask).shape == (3, 32)
    with pytest.raises(ValueError, match="positions"):
        TransformerTextEncoder(positions="rotary")
