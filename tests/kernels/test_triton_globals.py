"""Compiled Triton only lets a kernel read globals that are tl.constexpr (or functions and
modules); the CPU interpreter reads any global. This catches on CPU what once failed only
on the GPU: a plain-float module constant used inside a @triton.jit function."""
import importlib
import inspect
import types

import pytest
import triton
import triton.language as tl

# Under TRITON_INTERPRET=1, @triton.jit gives an InterpretedFunction instead of a JITFunction.
JIT_TYPES = (triton.runtime.JITFunction, triton.runtime.interpreter.InterpretedFunction)
MODULES = ["kernels.selective_scan.triton_common", "kernels.selective_scan.triton_fwd",
           "kernels.selective_scan.triton_bwd", "kernels.state_update.triton_step",
           "kernels.causal_conv1d.triton_conv", "kernels.common.triton_math"]


def _jit_functions():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, JIT_TYPES):
                yield f"{name}.{attr}", value


JITTED = list(_jit_functions())


def test_every_kernel_module_has_jit_functions():
    assert {name.rsplit(".", 1)[0] for name, _ in JITTED} == set(MODULES)


@pytest.mark.parametrize("name,fn", JITTED, ids=[n for n, _ in JITTED])
def test_jit_globals_are_constexpr(name, fn):
    python_fn = fn.fn
    for global_name in python_fn.__code__.co_names:
        if global_name not in python_fn.__globals__:
            continue  # an attribute name (tl.load) or a builtin such as range
        value = python_fn.__globals__[global_name]
        allowed = (isinstance(value, (tl.constexpr, types.ModuleType) + JIT_TYPES)
                   or inspect.isfunction(value) or inspect.isclass(value) or value is None)
        assert allowed, (f"{name} reads global {global_name} = {value!r}; "
                         f"wrap it in tl.constexpr(...) so compiled Triton accepts it")
