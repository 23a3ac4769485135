"""The Mamba mixer: initialisation, decode == forward, padding and direction."""
import copy
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


def _block_grads(block, x, seq_lens, reverse, g_out):
    """The block's output and the gradients of its input and every parameter."""
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = block(x, seq_lens=seq_lens, reverse=reverse)
    (out.double() * g_out).sum().backward()
    grads = {name: p.grad for name, p in block.named_parameters()}
    return out, {"input": x.grad, **grads}


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fused_cpu_block_matches_the_float64_reference(block, padded, reverse, dtype, tolerance):
    """The compiled path (strided views, fused conv and scan) against the reference
    backends in float64: the output and the gradients of the input and every parameter."""
    torch.manual_seed(1)
    x = torch.randn(3, 21, 16, dtype=torch.float64)
    seq_lens = torch.tensor([21, 13, 4]) if padded else None
    g_out = torch.randn(3, 21, 16, dtype=torch.float64)
    reference = copy.deepcopy(block).double()
    reference.backend = "reference"
    ref_out, ref_grads = _block_grads(reference, x, seq_lens, reverse, g_out)
    fast = copy.deepcopy(block).to(dtype)
    fast.backend = "cpu"
    out, grads = _block_grads(fast, x.to(dtype), seq_lens, reverse, g_out)
    real = torch.ones(3, 21, dtype=torch.bool) if not padded else \
        torch.arange(21)[None, :] < seq_lens[:, None]
    assert relative_error(out[real], ref_out[real]) < tolerance
    for name, g in grads.items():
        assert relative_error(g, ref_grads[name]) < tolerance, name


def test_forward_copies_no_activation(block):
    """The block hands the kernels strided views of its (b, l, .) activations: no op of
    the forward copies a tensor as large as one activation."""
    from torch.utils._python_dispatch import TorchDispatchMode

    copies = {"aten.clone.default", "aten.copy_.default", "aten._to_copy.default",
              "aten.cat.default", "aten.contiguous.default", "aten.flip.default",
              "aten.constant_pad_nd.default", "aten.transpose_copy.default",
              "aten.permute_copy.default"}
    b, l = 4, 33
    activation = b * l * block.d_inner

    class Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if str(func) in copies:
                results = out if isinstance(out, (tuple, list)) else [out]
                self.seen += [(str(func), r.numel()) for r in results
                              if isinstance(r, torch.Tensor)]
            return out

    block.backend = "cpu"
    x = torch.randn(b, l, 16)
    for reverse in (False, True):
        with Watch() as watch:
            block(x, seq_lens=torch.tensor([33, 20, 9, 1]), reverse=reverse)
        assert watch.seen, "no small copies either: is the watch working?"
        big = [(name, n) for name, n in watch.seen if n >= activation]
        assert not big, big


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
