"""selective_state_update: decoding one token at a time reproduces the full scan."""
import pytest
import torch

from kernels import selective_scan_ref, selective_state_update
from kernels.state_update import selective_state_update_ref
from kernels.selective_scan.testing import ScanCase, make_inputs, relative_error


def _decode(kw, backend):
    """Run the sequence through the one-step update; returns (out (b, d, l), state)."""
    b, d, l = kw["u"].shape
    n = kw["A"].shape[1]
    state = (kw["initial_state"].clone() if kw["initial_state"] is not None
             else torch.zeros(b, d, n, device=kw["u"].device))
    step = lambda x, t: None if x is None else x[..., t]  # noqa: E731
    outs = [selective_state_update(state, kw["u"][..., t], kw["delta"][..., t], kw["A"],
                                   step(kw["B"], t), step(kw["C"], t), kw["D"], step(kw["z"], t),
                                   kw["delta_bias"], kw["delta_softplus"], backend=backend)
            for t in range(l)]
    return torch.stack(outs, dim=-1), state


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("case", [
    ScanCase(b=2, d=4, l=19, n=3, g=0),
    ScanCase(b=2, d=6, l=11, n=16, g=3, initial_state=False),
    ScanCase(b=1, d=4, l=9, n=5, g=2).with_options({"return_last_state", "initial_state"}),
    ScanCase(b=2, d=4, l=13, n=4, g=0, dtype=torch.bfloat16),
], ids=lambda c: c.label)
def test_decode_matches_full_scan(case, backend, device):
    kw = make_inputs(case, device=device)
    kw["return_last_state"] = True
    with torch.no_grad():
        out, state = _decode(kw, backend)
        ref_out, ref_last = selective_scan_ref(**kw)
    tol = 1e-5 if case.dtype == torch.float32 else 2e-2
    assert out.dtype == case.dtype
    assert relative_error(out, ref_out) < tol
    assert relative_error(state, ref_last) < 1e-5  # the state stays float32


def test_matches_mamba_step_reference(mamba_step_ref):
    # mamba-ssm groups heads, not channels: without heads its step takes one group.
    kw = make_inputs(ScanCase(b=2, d=4, l=1, n=8, g=0))
    args = (kw["u"][..., 0], kw["delta"][..., 0], kw["A"], kw["B"][..., 0], kw["C"][..., 0],
            kw["D"], kw["z"][..., 0], kw["delta_bias"], True)
    ours_state, theirs_state = kw["initial_state"].clone(), kw["initial_state"].clone()
    ours = selective_state_update_ref(ours_state, *args)
    theirs = mamba_step_ref(theirs_state, *args)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_state, theirs_state, rtol=1e-5, atol=1e-6)


def test_gradients_flow_through_the_reference_step():
    kw = make_inputs(ScanCase(b=1, d=2, l=1, n=3, g=0, dtype=torch.float64))
    x = kw["u"][..., 0].clone().requires_grad_()
    out = selective_state_update(kw["initial_state"].clone(), x, kw["delta"][..., 0], kw["A"],
                                 kw["B"][..., 0], kw["C"][..., 0], kw["D"], None, None, False)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


BAD = [
    ("state-rank", {"state": torch.zeros(2, 4)}, ValueError, "state"),
    ("x-shape", {"x": torch.zeros(2, 5)}, ValueError, "x must have shape (b, d)"),
    ("A-shape", {"A": torch.zeros(4, 2)}, ValueError, "A must have shape (d, n)"),
    ("B-groups", {"B": torch.zeros(2, 3, 3), "C": torch.zeros(2, 3, 3)}, ValueError, "B must"),
    ("C-mismatch", {"C": torch.zeros(2, 2, 3)}, ValueError, "same shape"),
    ("dt-int", {"dt": torch.zeros(2, 4, dtype=torch.int64)}, TypeError, "dt"),
    ("softplus-str", {"dt_softplus": "yes"}, TypeError, "dt_softplus"),
    ("backend", {"backend": "cuda"}, ValueError, "backend"),
]


@pytest.mark.parametrize("change,exc,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(change, exc, words):
    args = {"state": torch.zeros(2, 4, 3), "x": torch.randn(2, 4), "dt": torch.rand(2, 4),
            "A": -torch.rand(4, 3), "B": torch.randn(2, 3), "C": torch.randn(2, 3)}
    args.update(change)
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        selective_state_update(**args)


def test_triton_step_refuses_gradients():
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match="inference-only"):
        selective_state_update(torch.zeros(2, 4, 3), x, torch.rand(2, 4), -torch.rand(4, 3),
                               torch.randn(2, 3), torch.randn(2, 3), backend="triton")
