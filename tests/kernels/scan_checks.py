"""Assertions shared by the selective-scan test modules."""
from kernels.testing import TOLERANCE, ScanCase

# (oracle, dtype) -> (worst relative error, its quantity and case); printed after the run.
WORST_ERRORS: dict = {}


def assert_close(errors: dict, case: ScanCase, oracle: str = "reference", slack: float = 1.0):
    """Every relative error within the dtype's tolerance, reported all at once."""
    tol = TOLERANCE[case.dtype] * slack
    key = (oracle, str(case.dtype).replace("torch.", ""))
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
    return not (case.initial_state or case.seq_lens or case.reverse)
