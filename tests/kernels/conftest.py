import os

import pytest
import torch

from ssm.peers import mamba_selective_scan_ref


@pytest.fixture(scope="session")
def mamba_ref():
    """mamba-ssm's selective_scan_ref. CI sets REQUIRE_MAMBA_ORACLE=1 so it can't skip."""
    ref = mamba_selective_scan_ref()
    if ref is None:
        if os.environ.get("REQUIRE_MAMBA_ORACLE") == "1":
            pytest.fail("mamba-ssm is not importable but REQUIRE_MAMBA_ORACLE=1")
        pytest.skip("mamba-ssm not installed (pip extra 'peer')")
    return ref


@pytest.fixture
def generator():
    """A fresh seed per test, printed so a failure reproduces (KERNELS_TEST_SEED=...)."""
    seed = int(os.environ.get("KERNELS_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"input seed: KERNELS_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)
