"""causal_conv1d_fn (Triton and reference) and its decode step."""
import pytest
import torch
import torch.nn.functional as F

from kernels import causal_conv1d_fn, causal_conv1d_update
from kernels.causal_conv1d import causal_conv1d_ref
from kernels.selective_scan.testing import TOLERANCE, relative_error


def _inputs(b, d, l, w, dtype=torch.float32, device="cpu", bias=True):
    x = torch.randn(b, d, l, dtype=torch.float64).to(device=device, dtype=dtype)
    weight = torch.randn(d, w, dtype=torch.float64).to(device=device, dtype=torch.float32)
    b_ = torch.randn(d, dtype=torch.float64).to(device=device, dtype=torch.float32) if bias else None
    return x, weight, b_


def _grads(fn, x, weight, bias, activation, g_out, upcast=False):
    leaves = [t.detach().clone().to(torch.float64 if upcast else t.dtype).requires_grad_()
              if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves, activation)
    (out.double() * g_out).sum().backward()
    return out, [t.grad if t is not None else None for t in leaves]


CASES = [(b, d, l, w, act, bias, dtype)
         for (b, d, l) in [(2, 3, 1), (1, 5, 37), (2, 40, 130)]
         for w in (1, 4) for act in (None, "silu") for bias in (True, False)
         for dtype in (torch.float32,)] + [
    (2, 8, 50, 4, "silu", True, torch.bfloat16), (1, 4, 20, 3, None, True, torch.float16)]


@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("b,d,l,w,act,bias,dtype", CASES)
def test_fast_paths_match_reference(b, d, l, w, act, bias, dtype, backend, device):
    if backend == "cpu":
        device = "cpu"
    x, weight, bias_t = _inputs(b, d, l, w, dtype, device, bias)
    g_out = torch.randn(b, d, l, dtype=torch.float64, device=device)
    fast = lambda *a: causal_conv1d_fn(*a, backend=backend)  # noqa: E731
    out, grads = _grads(fast, x, weight, bias_t, act, g_out)
    ref_out, ref_grads = _grads(causal_conv1d_ref, x, weight, bias_t, act, g_out, upcast=True)
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and relative_error(out, ref_out) < tol
    for name, g, rg in zip(("x", "weight", "bias"), grads, ref_grads):
        if rg is not None:
            assert g.dtype == {"x": dtype}.get(name, torch.float32)
            assert relative_error(g, rg) < tol, name


def _reverse_ref(x, weight, bias, activation, seq_lens):
    """The reverse conv as its definition reads: the causal reference over each row's real
    part, read backwards (padding zeroed, then flipped)."""
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < seq_lens[:, None]
    x = x * keep[:, None, :].to(x.dtype)
    return causal_conv1d_ref(x.flip(-1), weight, bias, activation).flip(-1)


def _channel_last(x):
    return x.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
@pytest.mark.parametrize("b,d,l,w,act,layout", [
    (3, 16, 37, 4, "silu", "channel_last"),    # the Mamba block's reverse mixer
    (2, 5, 20, 3, None, "contiguous"),
    (2, 12, 3, 4, "silu", "channel_last"),     # shorter than the window
    (2, 9, 11, 1, "silu", "contiguous"),
])
def test_reverse_with_padding_matches_reference(b, d, l, w, act, layout, backend, device):
    """reverse=True with seq_lens: outputs and the x, weight, bias gradients against the
    float64 reference of the definition; padded positions get no gradient."""
    device = "cpu" if backend == "cpu" else device
    x, weight, bias = _inputs(b, d, l, w, device=device)
    lengths = torch.randint(1, l + 1, (b,))
    lengths[0] = l
    g_out = torch.randn(b, d, l, dtype=torch.float64, device=device)
    arrange = _channel_last if layout == "channel_last" else (lambda t: t)

    def fast(x, weight, bias, activation):
        return causal_conv1d_fn(arrange(x), weight, bias, activation,
                                seq_lens=lengths.to(device), reverse=True, backend=backend)

    ref = lambda x, weight, bias, activation: _reverse_ref(  # noqa: E731
        x, weight, bias, activation, lengths.to(device))
    out, grads = _grads(fast, x, weight, bias, act, g_out)
    ref_out, ref_grads = _grads(ref, x, weight, bias, act, g_out, upcast=True)
    assert relative_error(out, ref_out) < 1e-5
    for name, g, rg in zip(("x", "weight", "bias"), grads, ref_grads):
        assert relative_error(g, rg) < 1e-5, name
    padded = torch.arange(l)[None, :] >= lengths[:, None]
    assert (grads[0].cpu().transpose(1, 2)[padded] == 0).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_float64_matches_reference_exactly_enough(reverse):
    """float64 through the compiled path: the reference's numbers to ~1e-12."""
    x, weight, bias = (t.double() for t in _inputs(2, 10, 30, 4))
    lengths = torch.tensor([30, 17])
    g_out = torch.randn(2, 10, 30, dtype=torch.float64)
    fast = lambda x, w, b, a: causal_conv1d_fn(_channel_last(x), w, b, a, seq_lens=lengths,  # noqa: E731
                                               reverse=reverse, backend="cpu")
    ref = ((lambda x, w, b, a: _reverse_ref(x, w, b, a, lengths)) if reverse  # noqa: E731
           else causal_conv1d_ref)
    out, grads = _grads(fast, x, weight, bias, "silu", g_out)
    ref_out, ref_grads = _grads(ref, x, weight, bias, "silu", g_out)
    assert relative_error(out, ref_out) < 1e-12
    for g, rg in zip(grads, ref_grads):
        assert relative_error(g, rg) < 1e-12


def test_cpu_output_keeps_the_channel_last_layout():
    x, weight, bias = _inputs(2, 16, 10, 4)
    out = causal_conv1d_fn(_channel_last(x), weight, bias, "silu", backend="cpu")
    assert out.stride(1) == 1 and out.shape == (2, 16, 10)


@pytest.mark.parametrize("act", [None, "silu"])
def test_reference_matches_torch_conv1d(act):
    x, weight, bias = _inputs(2, 6, 33, 4, torch.float64)
    expected = F.conv1d(x, weight.double()[:, None, :], bias.double(), padding=3, groups=6)
    expected = expected[..., :33]
    if act == "silu":
        expected = F.silu(expected)
    torch.testing.assert_close(causal_conv1d_ref(x, weight, bias, act), expected)


def test_non_contiguous_input(device):
    x, weight, bias = _inputs(2, 6, 21, 4, device=device)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    out = causal_conv1d_fn(strided, weight, bias, "silu", backend="triton")
    assert relative_error(out, causal_conv1d_ref(x, weight, bias, "silu")) < 1e-6


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("act", [None, "silu"])
def test_decode_steps_match_full_conv(backend, act, device):
    x, weight, bias = _inputs(2, 6, 9, 4, device=device)
    state = torch.zeros(2, 6, 4, device=device)
    with torch.no_grad():
        steps = torch.stack([causal_conv1d_update(x[..., t], state, weight, bias, act,
                                                  backend=backend) for t in range(9)], -1)
    full = causal_conv1d_ref(x, weight, bias, act)
    assert relative_error(steps, full) < 1e-6
    torch.testing.assert_close(state, x[..., -4:])  # the window holds the last w inputs


BAD = [
    ("x-rank", lambda x, w, b: (x[0], w, b, None), ValueError, "x must have shape"),
    ("l-zero", lambda x, w, b: (x[..., :0], w, b, None), ValueError, "l == 0"),
    ("weight-d", lambda x, w, b: (x, w[:2], b, None), ValueError, "weight must have shape"),
    ("weight-w0", lambda x, w, b: (x, w[:, :0], b, None), ValueError, "w >= 1"),
    ("bias", lambda x, w, b: (x, w, b[:2], None), ValueError, "bias must have shape"),
    ("activation", lambda x, w, b: (x, w, b, "relu"), ValueError, "activation"),
    ("x-int", lambda x, w, b: (x.long(), w, b, None), TypeError, "x must be a floating"),
]
BAD_KEYWORDS = [
    ("seq_lens-shape", {"seq_lens": torch.tensor([5])}, ValueError, "seq_lens must have shape"),
    ("seq_lens-range", {"seq_lens": torch.tensor([5, 6])}, ValueError, "seq_lens must lie in"),
    ("seq_lens-float", {"seq_lens": torch.tensor([5.0, 5.0])}, TypeError, "integer tensor"),
    ("reverse-int", {"reverse": 1}, TypeError, "reverse must be a bool"),
    ("backend", {"backend": "cuda"}, ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs,exc,words", [b[1:] for b in BAD_KEYWORDS],
                         ids=[b[0] for b in BAD_KEYWORDS])
def test_bad_keywords_are_named(kwargs, exc, words):
    x, w, b = _inputs(2, 3, 5, 4)
    with pytest.raises(exc, match=words):
        causal_conv1d_fn(x, w, b, **kwargs)


@pytest.mark.parametrize("make,exc,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(make, exc, words):
    x, w, b = _inputs(2, 3, 5, 4)
    with pytest.raises(exc, match=words):
        causal_conv1d_fn(*make(x, w, b))


def test_update_rejects_bad_state():
    x, w, b = _inputs(2, 3, 5, 4)
    with pytest.raises(ValueError, match="conv_state must have shape"):
        causal_conv1d_update(x[..., 0], torch.zeros(2, 3, 3), w, b)
