"""Device-side helpers for @triton.jit kernels, shared by every op."""
import triton
import triton.language as tl

# Globals a @triton.jit function reads must be tl.constexpr; compiled Triton rejects plain floats.
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def softplus(x):
    # log1p(exp(x)) without a log1p intrinsic: Goldberg's correction keeps small values
    # accurate; above 20 softplus(x) == x in float32, as in torch.
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
    return tl.where(x > 20.0, x, lp)
