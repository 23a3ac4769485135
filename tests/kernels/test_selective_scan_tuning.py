"""Launch configs of the Triton scan: every autotune candidate is correct (through the
interpreter on CPU), pruning keeps block_d inside a group, and nothing autotunes on CPU."""
import pytest
import torch
import triton

from kernels import selective_scan_ref
from kernels.selective_scan import triton_fwd
from kernels.selective_scan.testing import ScanCase, compare_to_reference
from kernels.selective_scan.triton_common import (COMPILED_BACKWARD, COMPILED_FORWARD,
                                                  LaunchConfig, backward_at, launch_config)
from kernels.selective_scan.triton_scan import triton_selective_scan
from kernels.selective_scan.triton_tuning import (BACKWARD_CANDIDATES, FORWARD_CANDIDATES,
                                                  backward_configs, forward_configs, l_bucket,
                                                  prune_backward, prune_forward, use_autotune)
from kernels.selective_scan.validation import check_scan_inputs
from scan_checks import assert_close


def _scan_with(forward, backward):
    def scan(**kwargs):
        dims = check_scan_inputs(**kwargs)
        return triton_selective_scan(
            kwargs["u"], kwargs["delta"], kwargs["A"], kwargs["B"], kwargs["C"], kwargs["D"],
            kwargs["z"], kwargs["delta_bias"], kwargs["delta_softplus"],
            kwargs["initial_state"], kwargs["seq_lens"], kwargs["reverse"], dims, forward,
            backward)
    return scan


PAIRS = list(dict.fromkeys(
    [(c, backward_at(COMPILED_BACKWARD, c.block_l)) for c in FORWARD_CANDIDATES]
    + [(COMPILED_FORWARD, backward_at(c, COMPILED_FORWARD.block_l)) for c in BACKWARD_CANDIDATES]))
# The defaults run in the default suite, every other candidate in the slow one.
DEFAULT = (COMPILED_FORWARD, backward_at(COMPILED_BACKWARD, COMPILED_FORWARD.block_l))


@pytest.mark.parametrize("forward,backward", [
    pytest.param(f, b, id=f"{f.label}/{b.label}",
                 marks=() if (f, b) == DEFAULT else pytest.mark.slow) for f, b in PAIRS])
def test_every_candidate_matches_the_reference(forward, backward, device, generator):
    """Two chunks (the carry crosses once), two d-blocks sharing a group (atomics add),
    bf16 inputs, every option; reversed with ragged rows when the block is even-sized."""
    reverse = forward.block_d % 4 == 0
    case = ScanCase(b=2, d=2 * max(forward.block_d, backward.block_d), l=forward.block_l + 37,
                    n=3, g=1, dtype=torch.bfloat16, seq_lens=reverse, reverse=reverse)
    errors = compare_to_reference(_scan_with(forward, backward), selective_scan_ref, case,
                                  device, generator)
    assert_close(errors, case, backend="triton")


def test_candidates_are_few_and_block_l_free_in_the_backward():
    assert 1 <= len(forward_configs()) <= 12 and 1 <= len(backward_configs()) <= 8
    assert all("BLOCK_L" not in c.kwargs for c in backward_configs())
    # Each thread holds 8 or 16 steps of a forward tile, 8 of a backward one.
    for c in FORWARD_CANDIDATES:
        assert c.block_d * c.block_l // (32 * c.num_warps) in (8, 16), c
    assert COMPILED_FORWARD in FORWARD_CANDIDATES


def test_pruning_keeps_block_d_inside_a_group():
    nargs = {"d": 6, "channels_per_group": 2, "l_bucket": 256}
    for prune, configs in ((prune_forward, forward_configs()),
                           (prune_backward, backward_configs())):
        pruned = prune(configs, nargs)
        assert pruned and all(2 % c.kwargs["BLOCK_D"] == 0 for c in pruned)
        keys = [(tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages) for c in pruned]
        assert len(keys) == len(set(keys))
    # the backward's warps follow the forward's chunk length: steps per thread stay put
    for block_l in (128, 256):
        for c in prune_backward(backward_configs(), nargs, BLOCK_L=block_l):
            assert c.kwargs["BLOCK_D"] * block_l // (32 * c.num_warps) in (2, 4, 8), c


def test_length_buckets():
    assert [l_bucket(l) for l in (1, 256, 257, 1024, 3000, 4096, 5000, 10**6)] == \
        [256, 256, 1024, 1024, 4096, 4096, 16384, 16384]


def test_no_autotuning_under_the_interpreter():
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("interpreter only")
    assert not use_autotune() and triton_fwd._selective_scan_fwd_autotuned is None
    config = launch_config(d=8, n=3, l=300, channels_per_group=8)
    assert config.block_l == 128 and triton.cdiv(300, config.block_l) == 3  # crosses chunks
    assert launch_config(d=8, n=3, l=300, channels_per_group=8, backward=True,
                         block_l=32).block_l == 32


def test_backward_config_needs_the_forwards_chunk_length():
    kwargs = dict(u=torch.randn(1, 2, 8), delta=torch.rand(1, 2, 8), A=-torch.rand(2, 3),
                  B=torch.randn(1, 3, 8), C=torch.randn(1, 3, 8))
    dims = check_scan_inputs(**kwargs)
    with pytest.raises(ValueError, match="same block_l"):
        triton_selective_scan(*kwargs.values(), None, None, None, False, None, None, False,
                              dims, LaunchConfig(2, 1, 8), LaunchConfig(2, 1, 16))
