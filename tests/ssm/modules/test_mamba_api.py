"""ssm.modules.Mamba as a drop-in for mamba-ssm's mamba_simple.Mamba: same constructor,
parameter names, initialisation order, forward, and decode API."""
import os

import pytest
import torch

from kernels import selective_scan_ref
from kernels.bench.peers import mamba_selective_scan_ref
from kernels.selective_scan.testing import relative_error
from ssm.modules import Mamba

SIZES = dict(d_model=16, d_state=8, d_conv=4, expand=2)


@pytest.fixture
def mamba_simple(monkeypatch):
    """mamba-ssm's module file, its CUDA-only calls pointed at the PyTorch references:
    selective_scan_fn -> selective_scan_ref, no Triton decode step, no causal_conv1d."""
    if mamba_selective_scan_ref() is None:
        if os.environ.get("REQUIRE_MAMBA_ORACLE") == "1":
            pytest.fail("mamba-ssm is not importable but REQUIRE_MAMBA_ORACLE=1")
        pytest.skip("mamba-ssm not installed (see the README's install line)")
    from mamba_ssm.modules import mamba_simple as module
    monkeypatch.setattr(module, "selective_scan_fn", selective_scan_ref)
    monkeypatch.setattr(module, "selective_state_update", None)
    monkeypatch.setattr(module, "causal_conv1d_fn", None)
    monkeypatch.setattr(module, "causal_conv1d_update", None)
    return module


@pytest.fixture
def pair(mamba_simple):
    """(ours, theirs), each built right after torch.manual_seed(seed)."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    print(f"seed {seed}")
    torch.manual_seed(seed)
    ours = Mamba(**SIZES, dt_init="random", layer_idx=3)
    torch.manual_seed(seed)
    theirs = mamba_simple.Mamba(**SIZES, layer_idx=3, use_fast_path=False)
    return ours, theirs


def test_same_seed_same_weights_same_names_same_order(pair):
    ours, theirs = pair
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(a, b), name
        assert getattr(a, "_no_weight_decay", False) == getattr(b, "_no_weight_decay", False)
    assert ours.dt_proj.bias._no_reinit and ours.layer_idx == 3


def test_forward_equals_mamba_ssm(pair):
    ours, theirs = pair
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        assert relative_error(ours(x), theirs(x)) < 1e-5


def test_decode_api_matches_mamba_ssm(pair):
    """allocate_inference_cache(batch_size, max_seqlen, dtype=None) and step(...) ->
    (out, conv_state, ssm_state), called exactly as mamba-ssm code calls them."""
    ours, theirs = pair
    x = torch.randn(3, 7, 16)
    mine, reference = ours.allocate_inference_cache(3, 7), theirs.allocate_inference_cache(3, 7)
    assert [tuple(s.shape) for s in mine] == [tuple(s.shape) for s in reference]
    assert mine[1].dtype == torch.float32  # the documented state dtype
    with torch.no_grad():
        for t in range(7):
            out, conv_state, ssm_state = ours.step(x[:, t:t + 1], *mine)
            expected, *states = theirs.step(x[:, t:t + 1], *reference)
            assert out.shape == (3, 1, 16)
            assert conv_state is mine[0] and ssm_state is mine[1]  # updated in place
            assert relative_error(out, expected) < 1e-5
            for got, want in zip((conv_state, ssm_state), states):
                assert relative_error(got, want) < 1e-5


def test_cache_dtype_and_device_keywords():
    block = Mamba(**SIZES)
    conv_state, ssm_state = block.allocate_inference_cache(2, 5, dtype=torch.bfloat16,
                                                           device="cpu")
    assert conv_state.dtype == torch.bfloat16 and ssm_state.dtype == torch.float32
    assert conv_state.shape == (2, 32, 4) and ssm_state.shape == (2, 32, 8)


@pytest.mark.parametrize("call, words", [
    (lambda b: b.allocate_inference_cache(2, "cpu"), ["max_seqlen", "device="]),
    (lambda b: b.allocate_inference_cache(0), ["batch_size"]),
    (lambda b: b.allocate_inference_cache(2, 8, dtype=torch.int64), ["dtype"]),
])
def test_cache_bad_arguments_are_named(call, words):
    """The old signature's device in second place now gets an error that says why."""
    with pytest.raises(TypeError) as info:
        call(Mamba(**SIZES))
    assert all(word in str(info.value) for word in words)


def test_constant_dt_init_and_bad_choice():
    block = Mamba(**SIZES, dt_init="constant", dt_scale=2.0)
    assert torch.all(block.dt_proj.weight == 2.0 * block.dt_rank ** -0.5)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(**SIZES, dt_init="uniform")
