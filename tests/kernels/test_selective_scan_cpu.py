"""The compiled CPU selective scan (backend="cpu") against both oracles."""
import functools
from dataclasses import replace

import pytest
import torch

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan import cpu
from kernels.selective_scan.testing import ScanCase, compare_to_reference, make_inputs, scan_grid
from scan_checks import assert_close, check_against_oracles, mamba_comparable

cpu_scan = functools.partial(selective_scan_fn, backend="cpu")
# The test grid, plus float64 (which only the cpu and reference backends take).
GRID = scan_grid() + [c.__class__(**{**c.__dict__, "dtype": torch.float64})
                      for c in scan_grid(lengths=(1, 130), groups=(0, 2))[:8]]


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    if not cpu.EXTENSION.available():
        pytest.fail(f"CPU extension failed to build: {cpu.EXTENSION.error}")


@pytest.mark.parametrize("case", GRID, ids=[c.label for c in GRID])
def test_matches_reference_and_mamba(case, generator, request):
    mamba_ref = request.getfixturevalue("mamba_ref") if mamba_comparable(case) else None
    check_against_oracles(cpu_scan, case, "cpu", generator, mamba_ref, "cpu")


@pytest.mark.parametrize("case", [
    ScanCase(b=2, d=24, l=1000, n=16, g=3, seq_lens=True),           # many chunks, many rows
    ScanCase(b=1, d=4, l=200, n=1, g=0, reverse=True),               # n below one vector
    ScanCase(b=1, d=4, l=70, n=33, g=0, seq_lens=True, reverse=True),  # n over whole vectors
    ScanCase(b=1, d=2, l=65, n=256, g=0),                            # mamba's largest
    ScanCase(b=3, d=5, l=64, n=9, g=5, dtype=torch.float64),         # chunk-sized l, float64
], ids=lambda c: c.label)
def test_shapes(case, generator):
    errors = compare_to_reference(cpu_scan, selective_scan_ref, case, "cpu", generator)
    assert_close(errors, case, backend="cpu")


def channel_last(x):
    """The same values in channel-last memory, as the Mamba block holds them: (b, d, l) as a
    view of (b, l, d), (b, g, n, l) as a view of (b, l, g, n). Differentiable."""
    if x.dim() == 3:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)


def block_layout(u, delta, B, C, z=None, **kwargs):
    """The Mamba block's call: u and z halves of one (b, l, 2d) tensor, B and C slices of
    one (b, l, 2n) tensor (3-D B, C), delta (b, l, d); every one a strided view."""
    if z is not None:
        u, z = (x.transpose(1, 2) for x in torch.cat([u, z], 1).transpose(1, 2).contiguous()
                .chunk(2, dim=-1))
    else:
        u = channel_last(u)
    if B.dim() == 3:
        B, C = (x.transpose(1, 2) for x in torch.cat([B, C], 1).transpose(1, 2).contiguous()
                .chunk(2, dim=-1))
    else:
        B, C = channel_last(B), channel_last(C)
    return cpu_scan(u, channel_last(delta), B=B, C=C, z=z, **kwargs)


CHANNEL_LAST = [
    ScanCase(b=2, d=16, l=70, n=16, g=0, seq_lens=True),                # the block's shape
    ScanCase(b=2, d=16, l=70, n=16, g=0, seq_lens=True, reverse=True),  # bimamba's reverse
    ScanCase(b=3, d=24, l=33, n=5, g=3, seq_lens=True),                 # 8 channels per group
    ScanCase(b=2, d=20, l=40, n=3, g=2, reverse=True),                  # 10 per group: a tail
    ScanCase(b=2, d=12, l=1, n=4, g=0),                                 # one step
    ScanCase(b=2, d=16, l=37, n=7, g=0, seq_lens=True, reverse=True, dtype=torch.float64),
    ScanCase(b=2, d=16, l=37, n=16, g=0, dtype=torch.bfloat16),
]


# Each with every option on, and the first four with only the recurrence.
CHANNEL_LAST += [replace(c, D=False, z=False, delta_bias=False, delta_softplus=False,
                         initial_state=False) for c in CHANNEL_LAST[:4]]


@pytest.mark.parametrize("case", CHANNEL_LAST, ids=lambda c: c.label)
def test_channel_last_views_match_reference(case, generator):
    """The block's strided views: outputs and every gradient against the float64 reference."""
    errors = compare_to_reference(block_layout, selective_scan_ref, case, "cpu", generator)
    assert_close(errors, case, backend="cpu")


def test_outputs_and_gradients_keep_the_input_layout(generator):
    kw = make_inputs(ScanCase(b=2, d=16, l=9, n=4), generator=generator)
    u = channel_last(kw.pop("u")).requires_grad_()
    z = channel_last(kw.pop("z")).requires_grad_()
    delta = kw.pop("delta").requires_grad_()                    # (b, d, l) contiguous
    strides = {}
    for name, x in (("u", u), ("z", z), ("delta", delta)):
        x.register_hook(lambda g, name=name: strides.update({name: g.stride()}))
    out, _ = cpu_scan(u, delta, z=z, **kw)
    assert out.stride(1) == 1                                   # channel-last, as u
    out.sum().backward()
    assert strides["u"][1] == 1 and strides["z"][1] == 1        # as u and z
    assert strides["delta"][2] == 1                             # as delta


def test_non_contiguous_inputs(generator):
    kw = make_inputs(ScanCase(b=2, d=4, l=19, n=3, g=2), generator=generator)
    strided = {**kw, "u": kw["u"].transpose(1, 2).contiguous().transpose(1, 2),
               "B": kw["B"].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)}
    out, last = cpu_scan(**strided)
    ref_out, ref_last = selective_scan_ref(**kw)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_is_the_compiled_path(generator):
    kw = make_inputs(ScanCase(l=9), generator=generator)
    torch.testing.assert_close(selective_scan_fn(**kw, backend="auto"), cpu_scan(**kw),
                               rtol=0, atol=0)


def test_rejects_non_cpu_tensors():
    kw = make_inputs(ScanCase(l=4), device="meta")
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        selective_scan_fn(**kw, backend="cpu")
