"""Bad input fails early with a ValueError or TypeError naming the argument, on every backend."""
import pytest
import torch

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan.testing import ScanCase, make_inputs


def _inputs(**case):
    return make_inputs(ScanCase(b=2, d=4, l=6, n=3, g=0, **case))


def _swap(name, value, **case):
    kw = _inputs(**case)
    kw[name] = value(kw) if callable(value) else value
    return kw


BAD = [
    # (id, kwargs, exception, words the message must contain)
    ("u-rank", _swap("u", lambda k: k["u"][0]), ValueError, ["u", "3 dimensions"]),
    ("l-zero", _swap("u", lambda k: k["u"][..., :0]), ValueError, ["l == 0"]),
    ("delta-shape", _swap("delta", lambda k: k["delta"][..., :5]), ValueError, ["delta", "(b, d, l)"]),
    ("A-d", _swap("A", lambda k: k["A"][:3]), ValueError, ["A", "(d, n)"]),
    ("A-complex", _swap("A", lambda k: k["A"].to(torch.complex64)), TypeError, ["A", "float"]),
    ("B-2d", _swap("B", lambda k: torch.randn(4, 3)), ValueError, ["B", "(b, n, l) or (b, g, n, l)"]),
    ("B-n", _swap("B", lambda k: torch.randn(2, 5, 6)), ValueError, ["B", "(b, n, l)"]),
    ("C-length", _swap("C", lambda k: torch.randn(2, 3, 7)), ValueError, ["C", "(b, n, l)"]),
    ("groups-not-dividing", dict(_inputs(), B=torch.randn(2, 3, 3, 6), C=torch.randn(2, 3, 3, 6)),
     ValueError, ["g = 3", "d = 4"]),
    ("groups-differ", dict(_inputs(), B=torch.randn(2, 2, 3, 6), C=torch.randn(2, 3, 6)),
     ValueError, ["same number of groups"]),
    ("z-shape", _swap("z", lambda k: k["z"][:1]), ValueError, ["z", "(b, d, l)"]),
    ("D-shape", _swap("D", torch.randn(5)), ValueError, ["D", "(d)"]),
    ("delta_bias-shape", _swap("delta_bias", torch.randn(4, 1)), ValueError, ["delta_bias", "1 dimensions"]),
    ("initial_state-shape", _swap("initial_state", torch.randn(2, 4, 4)), ValueError,
     ["initial_state", "(b, d, n)"]),
    ("u-int", _swap("u", lambda k: k["u"].to(torch.int32)), TypeError, ["u", "float"]),
    ("u-list", _swap("u", [[1.0]]), TypeError, ["u", "torch.Tensor"]),
    ("seq_lens-float", _swap("seq_lens", torch.tensor([6.0, 2.0])), TypeError, ["seq_lens", "integer"]),
    ("seq_lens-shape", _swap("seq_lens", torch.tensor([6])), ValueError, ["seq_lens", "(b,)"]),
    ("seq_lens-too-long", _swap("seq_lens", torch.tensor([7, 2])), ValueError, ["seq_lens", "[0, 6]"]),
    ("seq_lens-negative", _swap("seq_lens", torch.tensor([-1, 2])), ValueError, ["seq_lens", "[0, 6]"]),
    ("reverse-not-bool", _swap("reverse", 1), TypeError, ["reverse", "bool"]),
    ("softplus-not-bool", _swap("delta_softplus", "yes"), TypeError, ["delta_softplus", "bool"]),
]
if torch.cuda.is_available():
    BAD.append(("mixed-devices", _swap("C", lambda k: k["C"].cuda()), ValueError, ["C", "device"]))
else:
    BAD.append(("mixed-devices", _swap("C", lambda k: k["C"].to("meta")), ValueError, ["C", "device"]))


@pytest.mark.parametrize("fn", [selective_scan_fn, selective_scan_ref], ids=["fn", "ref"])
@pytest.mark.parametrize("kwargs,exc,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(fn, kwargs, exc, words):
    with pytest.raises(exc) as info:
        fn(**kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_bad_input_rejected_before_any_kernel(backend):
    kw = _swap("B", lambda k: torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="B"):
        selective_scan_fn(**kw, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_scan_fn(**_inputs(), backend="cuda")


def test_triton_rejects_float64(device):
    kw = make_inputs(ScanCase(b=2, d=4, l=6, n=3, g=0, dtype=torch.float64), device=device)
    with pytest.raises(TypeError, match="float64"):
        selective_scan_fn(**kw, backend="triton")


def test_triton_rejects_huge_state(device):
    kw = make_inputs(ScanCase(b=1, d=2, l=3, n=257), device=device)
    with pytest.raises(ValueError, match="n <= 256"):
        selective_scan_fn(**kw, backend="triton")


def test_poisoned_buffers_are_on():
    """The suite relies on NaN-filled kernel outputs; make sure that setting is live."""
    from kernels.common.launch import empty_output
    assert torch.isnan(empty_output((3,), torch.float32, "cpu")).all()
