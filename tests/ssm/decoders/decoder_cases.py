"""Tiny caption decoders and image features for the decoder tests."""
import torch

from ssm.decoders import MambaCaptionDecoder, TransformerCaptionDecoder

IMAGE_WIDTH, PATCHES = 12, 5
KINDS = ["mamba", "mamba_state", "mamba_patch_state", "transformer"]
CONDITIONING = {"mamba": "prefix", "mamba_state": "initial_state",
                "mamba_patch_state": "patch_state"}


def make_decoder(kind: str, seed: int = 0, width: int = 16):
    torch.manual_seed(seed)
    if kind == "transformer":
        return TransformerCaptionDecoder(width=width, depth=2, heads=2, image_width=IMAGE_WIDTH)
    return MambaCaptionDecoder(width=width, depth=2, d_state=4, image_width=IMAGE_WIDTH,
                               conditioning=CONDITIONING[kind], state_width=8)


def make_varied_decoder(kind: str, seed: int = 0):
    """A decoder whose untrained greedy paths wander: linear weights 3x their initial
    scale (at the initial scale most paths repeat one token from the first step)."""
    decoder = make_decoder(kind, seed)
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(3.0)
    return decoder


def image_features(b: int, seed: int = 1):
    """pooled (b, IMAGE_WIDTH), patches (b, PATCHES, IMAGE_WIDTH), scaled so the image
    moves the logits clearly."""
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(b, IMAGE_WIDTH, generator=g),
            3 * torch.randn(b, PATCHES, IMAGE_WIDTH, generator=g))

