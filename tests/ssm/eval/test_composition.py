"""The composition diagnostic (ssm.eval.composition): its bookkeeping against oracle
scorers with known answers, and its log-likelihood against the captioning loss."""
import types

import pytest
import torch

from ssm.data import ByteTokenizer, COLOURS, SHAPES, held_out_combinations, zero_shot_set
from ssm.decoders import MambaCaptionDecoder
from ssm.encoders import ConvNetImageEncoder
from ssm.eval import composition
from ssm.losses import lm_loss

HELD_OUT = held_out_combinations(0.2)
SCENES, IMAGE_SIZE = 96, 32


def _truth():
    """Each zero-shot scene's image bytes -> its (shape, colour)."""
    data = zero_shot_set(SCENES, 0, IMAGE_SIZE)
    return {data[i]["image"].numpy().tobytes(): (data[i]["shape"], data[i]["colour"])
            for i in range(SCENES)}


class _Identity(torch.nn.Module):
    """A stand-in CLIP whose image tower hands the pixels on, so an oracle can see them."""

    def __init__(self):
        super().__init__()
        self.image_encoder = types.SimpleNamespace(
            encode=lambda images: (images.flatten(1), images.flatten(1)[:, None]))
        self.decoder = None


def _oracle(veto: bool):
    """Scores a caption 1 when it names the image's shape; with veto, -10 more when its
    (shape, colour word) pair is held out: a decoder whose history forbids unseen pairs."""
    truth = _truth()

    def score(decoder, pixels, patches, texts, tokenizer, max_length):
        out = []
        for image, text in zip(pixels, texts):
            shape, _ = truth[image.view(3, IMAGE_SIZE, IMAGE_SIZE).numpy().tobytes()]
            words = text.split()
            said_shape = next(w for w in words if w in SHAPES)
            said_colour = next(w for w in words if w in COLOURS)
            out.append(float(said_shape == shape)
                       - 10.0 * (veto and (said_shape, said_colour) in HELD_OUT))
        return torch.tensor(out)
    return score


@pytest.mark.parametrize("verbosity", [0, 1])
def test_an_image_reader_is_right_everywhere_and_a_vetoing_one_fails_novel_pairs(
        monkeypatch, verbosity):
    model = _Identity()
    expected = {False: dict(seen=1.0, novel=1.0, seen_neutral=1.0, novel_neutral=1.0),
                True: dict(seen=1.0, novel=0.0, seen_neutral=1.0, novel_neutral=1.0)}
    for veto, want in expected.items():
        monkeypatch.setattr(composition, "caption_log_likelihood", _oracle(veto))
        results = composition.forced_shape_choice(model, ByteTokenizer(), 64, HELD_OUT,
                                                  verbosity, IMAGE_SIZE, "cpu", SCENES)
        assert results.pop("caption_forced_shape_neutral_colour") == "blue"
        assert results == {f"caption_forced_shape_{k}": v for k, v in want.items()}


def test_the_neutral_colour_is_one_no_held_out_pair_uses():
    colour = composition.neutral_colour(HELD_OUT)
    assert colour == "blue" and all(c != colour for _, c in HELD_OUT)
    everything = {(s, c) for s in SHAPES for c in COLOURS}
    assert composition.neutral_colour(everything) is None
    assert composition.forced_shape_choice(None, ByteTokenizer(), 64, frozenset(), 0, 32,
                                           "cpu") == {}
    with pytest.raises(ValueError, match="scenes must be an int >= 1"):
        composition.forced_shape_choice(None, ByteTokenizer(), 64, HELD_OUT, 0, 32, "cpu", 0)


def test_the_log_likelihood_is_the_captioning_loss_summed():
    torch.manual_seed(0)
    encoder = ConvNetImageEncoder(width=16, channels=(8, 16), image_size=IMAGE_SIZE)
    decoder = MambaCaptionDecoder(width=16, depth=1, d_state=4, image_width=16,
                                  conditioning="patch_state", state_width=8)
    decoder.eval()
    texts = ["large green cross", "small red circle left of large blue star"]
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    got = composition.caption_log_likelihood(decoder, *encoder.encode(images), texts,
                                             ByteTokenizer(), 64)
    for k, text in enumerate(texts):
        tokens, mask = ByteTokenizer().batch_encode([text], 64)
        logits = decoder(*(t[k:k + 1] for t in encoder.encode(images)), tokens, mask)
        loss = lm_loss(logits, tokens, mask)                # mean over len(text) + 1 targets
        assert got[k].item() == pytest.approx(-loss.item() * (len(text) + 1), rel=1e-5)
