"""Assertions shared by the selective-scan test modules."""
import torch

from kernels import selective_scan_ref
from kernels.selective_scan.testing import TOLERANCE, ScanCase, make_inputs, relative_error, run_with_grads

# (backend, oracle, dtype) -> (worst relative error, its quantity and case); printed at the end.
WORST_ERRORS: dict = {}


def assert_close(errors: dict, case: ScanCase, oracle: str = "reference", backend: str = "",
                 slack: float = 1.0):
    """Every relative error within the dtype's tolerance, reported all at once."""
    tol = TOLERANCE[case.dtype] * slack
    key = (backend or "-", oracle, str(case.dtype).replace("torch.", ""))
    for name, value in errors.items():
        if value > WORST_ERRORS.get(key, (-1.0,))[0]:
            WORST_ERRORS[key] = (value, name, case.label)
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= tol}
    assert not bad, f"{case.label} vs {oracle}: over {tol:.0e}: {bad}"


def without_extensions(fn):
    """Adapt mamba-ssm's ref, which lacks initial_state/seq_lens/reverse, to our kwargs."""
    def call(initial_state=None, seq_lens=None, reverse=False, **kwargs):
        assert initial_state is None and seq_lens is None and not reverse
        return fn(**kwargs)
    return call


def mamba_comparable(case: ScanCase) -> bool:
    """mamba-ssm's ref has none of our extensions and computes in float32 only."""
    return not (case.initial_state or case.seq_lens or case.reverse
                or case.dtype == torch.float64)


def check_against_oracles(scan, case: ScanCase, device, generator, mamba_ref=None,
                          backend: str = ""):
    """Outputs, dtypes, shapes and every gradient of ``scan`` against the float64 reference,
    and against mamba-ssm's reference when given and the case is within its options."""
    kwargs = make_inputs(case, device=device, generator=generator)
    (out, last), grads, g_out, g_last = run_with_grads(scan, kwargs)
    assert out.dtype == case.dtype and out.shape == (case.b, case.d, case.l)
    if case.return_last_state:
        assert last.shape == (case.b, case.d, case.n)
        assert last.dtype == (torch.float64 if case.dtype == torch.float64 else torch.float32)
    for name, g in grads.items():
        assert g.dtype == kwargs[name].dtype and g.shape == kwargs[name].shape, name

    oracles = {"reference": selective_scan_ref}
    if mamba_ref is not None and mamba_comparable(case):
        oracles["mamba_ssm"] = without_extensions(mamba_ref)
    for oracle_name, oracle in oracles.items():
        # mamba-ssm's ref computes in float32 and can't mix in float64 tensors.
        (ref_out, ref_last), ref_grads, _, _ = run_with_grads(
            oracle, kwargs, g_out, g_last, upcast=oracle_name == "reference")
        errors = {"out": relative_error(out, ref_out)}
        if case.return_last_state:
            errors["last_state"] = relative_error(last, ref_last)
        errors.update({f"grad_{k}": relative_error(g, ref_grads[k]) for k, g in grads.items()})
        assert_close(errors, case, oracle_name, backend)
