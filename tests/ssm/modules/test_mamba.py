"""The Mamba mixer: initialisation, decode == forward, padding and direction."""
import math

import pytest
import torch

from kernels.selective_scan.testing import relative_error
from ssm.modules import Mamba


@pytest.fixture
def block():
    torch.manual_seed(0)
    return Mamba(d_model=16, d_state=8, d_conv=4, expand=2)


def test_paper_initialisation(block):
    n = torch.arange(1, 9, dtype=torch.float32)
    torch.testing.assert_close(block.A_log, torch.log(n).repeat(32, 1))
    assert torch.all(block.D == 1)
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6   # [dt_min, dt_max], floor 1e-4
    assert block.A_log._no_weight_decay and block.D._no_weight_decay
    assert block.dt_rank == math.ceil(16 / 16)


def test_shapes_and_every_parameter_gets_a_gradient(block):
    x = torch.randn(2, 11, 16)
    out = block(x)
    assert out.shape == (2, 11, 16)
    out.square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_step_by_step_decode_equals_forward(block, backend):
    block.backend = backend
    x = torch.randn(2, 13, 16)
    with torch.no_grad():
        full = block(x)
        conv_state, ssm_state = block.allocate_inference_cache(2, 13)
        steps = torch.stack([block.step(x[:, t], conv_state, ssm_state)[0]
                             for t in range(13)], 1)
    assert relative_error(steps, full) < 1e-5


def test_backends_agree(block):
    x = torch.randn(2, 9, 16)
    block.backend = "reference"
    ref = block(x)
    block.backend = "cpu"
    assert relative_error(block(x), ref) < 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_padded_rows_equal_unpadded(block, reverse):
    """Each row of a right-padded batch matches the row run alone at its true length, in
    both directions (reverse: the conv and the scan start at the row's end)."""
    x = torch.randn(3, 12, 16)
    lengths = torch.tensor([12, 7, 2])
    with torch.no_grad():
        batch = block(x, seq_lens=lengths, reverse=reverse)
        for i, k in enumerate(lengths.tolist()):
            alone = block(x[i:i + 1, :k], reverse=reverse)
            assert relative_error(batch[i:i + 1, :k], alone) < 1e-5


def test_reverse_is_forward_on_flipped_input(block):
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x, reverse=True), block(x.flip(1)).flip(1))


def test_bad_input():
    with pytest.raises(ValueError, match="hidden must have shape"):
        Mamba(d_model=8)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="dt_rank"):
        Mamba(d_model=8, dt_rank=0)
    with pytest.raises(ValueError, match="one token"):
        block = Mamba(d_model=8)
        block.step(torch.randn(2, 3, 8), *block.allocate_inference_cache(2))
