"""The reference oracle against mamba-ssm's reference and against the maths itself."""
import functools

import pytest
import torch
import torch.nn.functional as F

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan.testing import (ScanCase, make_inputs, pairwise_option_sets, relative_error,
                             run_with_grads)
from scan_checks import assert_close, mamba_comparable, without_extensions

MAMBA_CASES = [ScanCase(b=2, d=6, l=l, n=4, g=g).with_options(on)
               for l in (1, 33) for g in (0, 1, 3) for on in pairwise_option_sets()]
MAMBA_CASES = [c for c in MAMBA_CASES if mamba_comparable(c)]


@pytest.mark.parametrize("case", MAMBA_CASES, ids=[c.label for c in MAMBA_CASES])
def test_reference_matches_mamba(case, mamba_ref, generator):
    kwargs = make_inputs(case, generator=generator)
    (out, last), grads, g_out, g_last = run_with_grads(selective_scan_ref, kwargs)
    (m_out, m_last), m_grads, _, _ = run_with_grads(without_extensions(mamba_ref), kwargs,
                                                    g_out, g_last)
    errors = {"out": relative_error(out, m_out)}
    if last is not None:
        errors["last_state"] = relative_error(last, m_last)
    errors.update({k: relative_error(g, m_grads[k]) for k, g in grads.items()})
    assert_close(errors, case, "mamba_ssm", backend="reference")


def test_two_steps_by_hand(generator):
    """l = 2 written out: softplus, decay, input, readout, skip and gate."""
    kw = make_inputs(ScanCase(b=1, d=3, l=2, n=2, g=0, dtype=torch.float64), generator=generator)
    u, delta, A, B, C, D, z = (kw[k].double() for k in ("u", "delta", "A", "B", "C", "D", "z"))
    dt = F.softplus(delta + kw["delta_bias"].double()[:, None])          # (1, 3, 2)
    h = kw["initial_state"].double()                                     # (1, 3, 2)
    expected = []
    for t in range(2):
        h = torch.exp(dt[..., t, None] * A) * h + dt[..., t, None] * B[:, None, :, t] * u[..., t, None]
        y = (h * C[:, None, :, t]).sum(-1) + D * u[..., t]
        expected.append(y * z[..., t] * torch.sigmoid(z[..., t]))
    out, last = selective_scan_ref(**kw)
    torch.testing.assert_close(out, torch.stack(expected, -1))
    torch.testing.assert_close(last, h)


@pytest.mark.parametrize("reverse", [False, True])
def test_split_scan_composes(reverse, generator):
    """Scanning [0, k) then [k, l) from the handed-over state equals one scan of [0, l)."""
    kw = make_inputs(ScanCase(l=23, reverse=reverse, dtype=torch.float64), generator=generator)
    out, last = selective_scan_ref(**kw)
    k = 9

    def part(sl, state):
        sub = {**kw, "initial_state": state}
        for name in ("u", "delta", "z", "B", "C"):
            sub[name] = kw[name][..., sl]
        return selective_scan_ref(**sub)

    first, second = (slice(k, None), slice(0, k)) if reverse else (slice(0, k), slice(k, None))
    out_1, state = part(first, kw["initial_state"])
    out_2, last_2 = part(second, state)
    joined = torch.cat([out_2, out_1] if reverse else [out_1, out_2], dim=-1)
    torch.testing.assert_close(joined, out)
    torch.testing.assert_close(last_2, last)


def test_reverse_is_scan_of_flipped_sequence(generator):
    kw = make_inputs(ScanCase(l=17, dtype=torch.float64), generator=generator)
    out, last = selective_scan_ref(**{**kw, "reverse": True})
    flipped = {**kw, **{k: kw[k].flip(-1) for k in ("u", "delta", "z", "B", "C")}}
    out_f, last_f = selective_scan_ref(**flipped)
    torch.testing.assert_close(out, out_f.flip(-1))
    torch.testing.assert_close(last, last_f)


@pytest.mark.parametrize("reverse", [False, True])
def test_seq_lens_equals_truncated_rows(reverse, generator):
    """Row i with seq_lens[i] = k behaves as the row cut to length k; its padding outputs 0."""
    kw = make_inputs(ScanCase(b=3, l=20, seq_lens=True, reverse=reverse, dtype=torch.float64),
                     generator=generator)
    kw["seq_lens"] = torch.tensor([20, 13, 1])
    out, last = selective_scan_ref(**kw)
    for i, k in enumerate(kw["seq_lens"].tolist()):
        row = {name: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[0] == 3 else v)
               for name, v in kw.items()}
        row["seq_lens"] = None
        for name in ("u", "delta", "z", "B", "C"):
            row[name] = row[name][..., :k]
        row_out, row_last = selective_scan_ref(**row)
        torch.testing.assert_close(out[i:i + 1, :, :k], row_out)
        torch.testing.assert_close(last[i:i + 1], row_last)
        assert torch.all(out[i, :, k:] == 0)


def test_zero_length_row_keeps_initial_state(generator):
    kw = make_inputs(ScanCase(b=2, l=5, seq_lens=True, dtype=torch.float64), generator=generator)
    kw["seq_lens"] = torch.tensor([5, 0])
    out, last = selective_scan_ref(**kw)
    assert torch.all(out[1] == 0)
    torch.testing.assert_close(last[1], kw["initial_state"][1])


@pytest.mark.parametrize("backend", ["reference", "triton", "cpu"])
@pytest.mark.parametrize("reverse", [False, True])
def test_extra_padding_changes_nothing_real(backend, reverse, device, generator):
    """Appending padding (random garbage) to a ragged batch leaves every real output, the
    last state and every gradient unchanged; padded inputs get zero gradient."""
    case = ScanCase(b=3, l=24, n=3, g=0, seq_lens=True, reverse=reverse)
    kw = make_inputs(case, device=device, generator=generator)
    kw["seq_lens"] = torch.tensor([24, 11, 3], device=device)
    extra = 13
    padded = dict(kw)
    for name in ("u", "delta", "z", "B", "C"):
        junk = torch.randn(*kw[name].shape[:-1], extra, generator=generator).to(kw[name])
        padded[name] = torch.cat([kw[name], junk], dim=-1)
    scan = functools.partial(selective_scan_fn, backend=backend)
    (out, last), grads, g_out, g_last = run_with_grads(scan, kw)
    g_out_padded = torch.cat([g_out, torch.randn(*g_out.shape[:-1], extra).to(g_out)], -1)
    (p_out, p_last), p_grads, _, _ = run_with_grads(scan, padded, g_out_padded, g_last)

    tol = 1e-6
    assert relative_error(p_out[..., :24], out) < tol
    assert relative_error(p_last, last) < tol
    assert torch.all(p_out[..., 24:] == 0)
    for name, g in grads.items():
        pg = p_grads[name]
        if name in ("u", "delta", "z", "B", "C"):
            assert torch.all(pg[..., 24:] == 0), name
            pg = pg[..., :24]
        assert relative_error(pg, g) < tol, name


def test_reference_gradcheck():
    """The oracle's own gradients against finite differences, in float64."""
    kw = make_inputs(ScanCase(b=1, d=2, l=5, n=2, g=0, seq_lens=True, dtype=torch.float64))
    kw["seq_lens"] = torch.tensor([4])
    names = [k for k, v in kw.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]

    def fn(*tensors):
        return selective_scan_ref(**{**kw, **dict(zip(names, tensors))})

    inputs = tuple(kw[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(fn, inputs)


def test_float64_runs_on_cpu_backends(generator):
    kw = make_inputs(ScanCase(l=9, dtype=torch.float64), generator=generator)
    for backend in ("auto", "reference"):
        out, last = selective_scan_fn(**kw, backend=backend)
        assert out.dtype == torch.float64 and last.dtype == torch.float64
