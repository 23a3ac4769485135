"""Generation: greedy through the recurrent step (or KV cache) against argmax decoding with
full forward passes, beams of width 1 against greedy, rows that stop early, seeded
sampling, and bad settings."""
import pytest
import torch

from decoder_cases import KINDS, image_features, make_decoder, make_varied_decoder
from ssm.data import ByteTokenizer
from ssm.decoders import BeamSearch, Greedy, Sampling, as_strategy, generate

TOKENIZER = ByteTokenizer()


class EarlyEos(ByteTokenizer):
    """A tokenizer whose EOS is an ordinary token, so untrained decoders stop early."""

    def __init__(self, eos_id):
        self.eos_id = eos_id


def _full_forward_greedy(decoder, pooled, patches, n, guidance=None):
    """Argmax decoding that runs the whole forward pass over the growing sequence; with a
    guidance scale s, the argmax of log p_u + s (log p_c - log p_u), p_u read with the null
    image."""
    null = decoder.null_image(pooled, patches)
    seq = torch.full((pooled.shape[0], 1), TOKENIZER.bos_id)
    with torch.no_grad():
        for _ in range(n):
            mask = torch.ones_like(seq, dtype=torch.bool)
            scores = decoder(pooled, patches, seq, mask)[:, -1]
            if guidance is not None:
                blank = decoder(*null, seq, mask)[:, -1].log_softmax(-1)
                scores = blank + guidance * (scores.log_softmax(-1) - blank)
            seq = torch.cat([seq, scores.argmax(-1)[:, None]], 1)
    return seq[:, 1:]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_steps_equal_full_forward_argmax(kind):
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(3)
    out = generate(decoder, pooled, patches, 16, "greedy", TOKENIZER, stop_at_eos=False)
    expected = _full_forward_greedy(decoder, pooled, patches, 16)
    assert torch.equal(out.tokens, expected)
    assert out.tokens.shape == (3, 16) and out.lengths.tolist() == [16] * 3
    assert len(set(expected.flatten().tolist())) > 8  # real paths, not one token repeated


@pytest.mark.parametrize("kind", KINDS)
def test_beam_of_width_one_is_greedy(kind):
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(3)
    greedy = generate(decoder, pooled, patches, 10, "greedy", TOKENIZER)
    beam = generate(decoder, pooled, patches, 10, BeamSearch(num_beams=1), TOKENIZER)
    assert torch.equal(beam.tokens, greedy.tokens)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_rows_that_stop_early_do_not_change_the_others(kind, strategy):
    """EOS is set to a token that row 0 writes early and the other rows never write: row 0
    stops there, the others run on, and every row equals the row generated alone."""
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(3)
    free = generate(decoder, pooled, patches, 9, strategy, TOKENIZER, stop_at_eos=False).tokens
    others = set(free[1:].flatten().tolist())
    eos = next(t for t in free[0, 1:5].tolist() if t not in others)
    tokenizer = EarlyEos(eos)
    batch = generate(decoder, pooled, patches, 9, strategy, tokenizer)
    assert batch.finished[0] and batch.lengths[0] < 5
    if strategy == "greedy":  # (a beam may still end on the new EOS: it keeps its score)
        assert not batch.finished[1:].any() and batch.tokens.shape[1] == 9
    for i in range(3):
        alone = generate(decoder, pooled[i:i + 1], patches[i:i + 1], 9, strategy, tokenizer)
        n = alone.tokens.shape[1]
        assert torch.equal(batch.tokens[i, :n], alone.tokens[0])
        assert (batch.tokens[i, n:] == TOKENIZER.pad_id).all()
        assert batch.texts[i] == alone.texts[0]
        assert batch.lengths[i] == alone.lengths[0]
    row = batch.tokens[0]
    assert row[batch.lengths[0]] == eos  # EOS kept, padding after it
    assert (row[batch.lengths[0] + 1:] == TOKENIZER.pad_id).all()


def test_texts_are_the_decoded_ids_before_eos():
    decoder = make_decoder("mamba")
    pooled, patches = image_features(2)
    out = generate(decoder, pooled, patches, 10, "greedy", TOKENIZER)
    for row, n, text in zip(out.tokens, out.lengths, out.texts):
        assert text == TOKENIZER.decode(row[:n].tolist())


def test_a_seed_gives_the_same_samples_and_another_seed_others():
    decoder = make_decoder("mamba")
    pooled, patches = image_features(3)
    sample = lambda seed: generate(decoder, pooled, patches, 20,  # noqa: E731
                                   Sampling(temperature=1.5, seed=seed), TOKENIZER,
                                   stop_at_eos=False).tokens
    assert torch.equal(sample(7), sample(7))
    assert not torch.equal(sample(7), sample(8))


@pytest.mark.parametrize("filtering", [dict(top_k=1), dict(top_p=1e-6)])
def test_top_k_1_and_a_tiny_top_p_are_greedy(filtering):
    decoder = make_decoder("transformer")
    pooled, patches = image_features(3)
    greedy = generate(decoder, pooled, patches, 12, Greedy(), TOKENIZER, stop_at_eos=False)
    sampled = generate(decoder, pooled, patches, 12, Sampling(temperature=2.0, seed=0, **filtering),
                       TOKENIZER, stop_at_eos=False)
    assert torch.equal(sampled.tokens, greedy.tokens)


def test_top_k_keeps_samples_among_the_k_most_likely():
    decoder = make_decoder("mamba_state")
    pooled, patches = image_features(4)
    out = generate(decoder, pooled, patches, 1, Sampling(temperature=5.0, top_k=3, seed=1),
                   TOKENIZER, stop_at_eos=False)
    with torch.no_grad():
        bos = torch.full((4, 1), TOKENIZER.bos_id)
        top3 = decoder(pooled, patches, bos, torch.ones_like(bos, dtype=torch.bool))[:, 0].topk(3).indices
    assert all(t in row for t, row in zip(out.tokens[:, 0].tolist(), top3.tolist()))


@pytest.mark.parametrize("kind", KINDS)
def test_beam_scores_are_the_log_probability_of_the_chosen_caption(kind):
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(2)
    out = generate(decoder, pooled, patches, 8, BeamSearch(num_beams=3), TOKENIZER,
                   stop_at_eos=False)
    seq = torch.cat([torch.full((2, 1), TOKENIZER.bos_id), out.tokens], 1)
    with torch.no_grad():
        logp = decoder(pooled, patches, seq[:, :-1], torch.ones(2, 8, dtype=torch.bool))
        logp = logp.log_softmax(-1).gather(-1, seq[:, 1:, None])[..., 0].sum(1)
    torch.testing.assert_close(out.scores, logp, rtol=1e-4, atol=1e-4)


def test_strategies_from_names_and_mappings():
    assert as_strategy("greedy") == Greedy()
    assert as_strategy({"name": "sample", "top_p": 0.9, "seed": 3}) == Sampling(top_p=0.9, seed=3)
    assert as_strategy({"name": "beam", "num_beams": 5}) == BeamSearch(num_beams=5)


def test_bad_settings_are_named():
    decoder = make_decoder("mamba")
    pooled, patches = image_features(1)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        generate(decoder, pooled, patches, 0, "greedy", TOKENIZER)
    with pytest.raises(ValueError, match="unknown strategy 'nucleus'"):
        generate(decoder, pooled, patches, 4, "nucleus", TOKENIZER)
    for top_p in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
            Sampling(top_p=top_p)
    with pytest.raises(ValueError, match="beam width"):
        BeamSearch(num_beams=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Sampling(temperature=0)
    with pytest.raises(ValueError, match="bad options for strategy 'beam'"):
        as_strategy({"name": "beam", "top_p": 0.5})
    with pytest.raises(TypeError, match="tokenizer must have"):
        generate(decoder, pooled, patches, 4, "greedy", tokenizer=None)


@pytest.mark.parametrize("kind", KINDS)
def test_guided_greedy_steps_equal_guided_full_forward_argmax(kind):
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(3)
    out = generate(decoder, pooled, patches, 12, "greedy", TOKENIZER, stop_at_eos=False,
                   guidance=3.0)
    expected = _full_forward_greedy(decoder, pooled, patches, 12, guidance=3.0)
    assert torch.equal(out.tokens, expected)
    # Guidance changes what is said: scale 3 is not plain greedy.
    plain = generate(decoder, pooled, patches, 12, "greedy", TOKENIZER, stop_at_eos=False)
    assert not torch.equal(out.tokens, plain.tokens)


@pytest.mark.parametrize("kind", KINDS)
def test_guidance_zero_reads_the_null_image_and_one_is_plain(kind):
    decoder = make_varied_decoder(kind)
    pooled, patches = image_features(3)
    null = generate(decoder, *decoder.null_image(pooled, patches), 10, "greedy", TOKENIZER)
    assert torch.equal(generate(decoder, pooled, patches, 10, "greedy", TOKENIZER,
                                guidance=0.0).tokens, null.tokens)
    plain = generate(decoder, pooled, patches, 10, "greedy", TOKENIZER)
    assert torch.equal(generate(decoder, pooled, patches, 10, "greedy", TOKENIZER,
                                guidance=1).tokens, plain.tokens)


def test_guided_beam_of_width_one_is_guided_greedy():
    decoder = make_varied_decoder("mamba_state")
    pooled, patches = image_features(3)
    greedy = generate(decoder, pooled, patches, 10, "greedy", TOKENIZER, guidance=2.5)
    beam = generate(decoder, pooled, patches, 10, BeamSearch(num_beams=1), TOKENIZER,
                    guidance=2.5)
    assert torch.equal(beam.tokens, greedy.tokens)


def test_bad_guidance_is_named():
    decoder = make_decoder("mamba_state")
    pooled, patches = image_features(1)
    for bad in (-1.0, "2", True):
        with pytest.raises(ValueError, match="guidance must be a number >= 0"):
            generate(decoder, pooled, patches, 4, "greedy", TOKENIZER, guidance=bad)
