"""Compile the package's Triton kernels for sm_90a on a machine without a GPU, and read
their machine code: registers and spills (``ptxas -v``), shared memory (Triton's own
count) and the SASS of the hot loop (``cuobjdump -sass``). All three tools ship with the
triton package.

This file is also a script, run by ``kernels.bench.kernel_profile`` in a subprocess:
``python kernels/bench/sm90_profile.py < request.json > rows.json``. That way another
Triton installation compiles the same kernels (the GPU machines run Triton 3.6; a venv with
``triton==3.6.0`` and no torch is enough), and a process under TRITON_INTERPRET=1 (the test
suite) still gets compiled kernels. Without torch the kernel modules are imported for
their @triton.jit functions only, with a placeholder ``torch`` (their launchers, which
would need the real one, are never called here).

Signatures are built the way Triton's launcher specialises real arguments: pointers are
16-byte aligned, an integer equal to 1 becomes the constant 1, others are i32 or i64 and
marked divisible by 16 when they are.
"""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The checkout whose kernels are compiled: this one, or the request's "kernels_root".
KERNELS_ROOT = ROOT
CAPABILITY = 90  # Hopper: H100, H200 (compiled as sm_90a)
TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int64": "i64"}


@dataclass
class Job:
    """One kernel to compile: its arguments by name, launch options and how much work one
    thread does per hot-loop iteration (to turn instruction counts into per-element ones)."""

    kernel: str                 # the row's name, e.g. selective_scan_fwd
    module: str                 # where the @triton.jit function lives
    function: str
    args: dict                  # name -> {"ptr": dtype} or an int
    constexprs: dict            # name -> value
    num_warps: int
    num_stages: int
    config: str                 # block sizes, for the table
    elements_per_thread: float  # elements of the hot loop's unit per thread and iteration
    element: str                # what an element is, e.g. "(d, l, n)"
    hot_loop: str               # "innermost loop" or "whole kernel" (kernels without a loop)
    enable_fp_fusion: bool = True
    options: str = ""           # the options that differ from the default, e.g. "REVERSE"


# ---------------------------------------------------------------------------------------
# Importing kernel modules with or without torch


def _placeholder_torch() -> types.ModuleType:
    """What the kernel modules touch of torch at import time: ``torch.autograd.Function``
    as a base class. Nothing here runs a launcher."""
    torch = types.ModuleType("torch")
    torch.autograd = types.SimpleNamespace(Function=object)
    torch.Tensor = object
    return torch


def _register_empty_package(package: str, top_folder: Path) -> None:
    """``package`` in sys.modules as an empty package over its folder, unless imported."""
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(top_folder.joinpath(*package.split(".")[1:]))]
        sys.modules[package] = module


def import_without_package_inits(name: str, top_folder: Path):
    """Import module ``name`` without running the __init__ of the packages above it: each
    missing one is registered as an empty package over its folder (``top_folder`` is the
    top package's)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        _register_empty_package(".".join(parts[:i]), top_folder)
    return importlib.import_module(name)


def import_kernel_module(name: str):
    """Import ``kernels.<...>`` for its @triton.jit functions. With torch this is a plain
    import; without it no package __init__ of ``kernels`` runs (they import the torch-based
    public ops): every package is registered empty, and a placeholder torch too."""
    try:
        import torch  # noqa: F401
    except ImportError:
        if sys.modules.get("torch") is None:  # absent, or blocked (None)
            sys.modules["torch"] = _placeholder_torch()
        top = KERNELS_ROOT / "kernels"
        for init in sorted(top.rglob("__init__.py")):
            _register_empty_package(".".join(("kernels", *init.parent.relative_to(top).parts)), top)
        return import_without_package_inits(name, top)
    return importlib.import_module(name)


# ---------------------------------------------------------------------------------------
# Jobs: what each launcher would compile for a shape


def pointer(dtype: str) -> dict:
    return {"ptr": TRITON_DTYPES.get(dtype, dtype)}


def contiguous_strides(*shape: int) -> tuple:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _per_thread(work: int, num_warps: int) -> float:
    return work / (32 * num_warps)


def _strides(name: str, axes: str, sizes: dict) -> dict:
    """stride_<name>_<axis> of a contiguous tensor whose axes are ``axes`` (letters)."""
    values = contiguous_strides(*(sizes[a] for a in axes))
    return {f"stride_{name}_{a}": v for a, v in zip(axes, values)}


def scan_jobs(b: int, d: int, l: int, n: int, dtype: str, forward=None, backward=None,
              options: dict | None = None) -> list[Job]:
    """The forward and backward scan kernels as the launcher compiles them on a GPU for
    (b, d, l, n) ``dtype`` inputs with B, C of shape (b, n, l), training (chunk states
    saved). ``forward``/``backward``: LaunchConfig, default ``launch_config``'s.
    ``options``: HAS_D, HAS_Z, HAS_DELTA_BIAS, DELTA_SOFTPLUS, ... (default: the Mamba
    block's D, z, delta_bias and softplus).

    Arguments are filled by name from one table of every tensor, size and stride the
    scan kernels take, so the kernels of an older checkout (``kernels_root``) profile too.
    """
    common = import_kernel_module("kernels.selective_scan.triton_common")
    fwd = forward or common.launch_config(d, n, l, d)
    if backward is None:
        try:
            backward = common.launch_config(d, n, l, d, backward=True, block_l=fwd.block_l)
        except TypeError:  # an older checkout: one config for both kernels
            backward = fwd
    warps_stages = lambda c: (getattr(c, "num_warps", 4), getattr(c, "num_stages", 3))  # noqa: E731
    try:
        l_bucket = import_kernel_module("kernels.selective_scan.triton_tuning").l_bucket(l)
    except ImportError:
        l_bucket = 0  # an older checkout, whose kernels take no l_bucket
    x, f32 = pointer(dtype), pointer("float32")
    sizes = {"b": b, "d": d, "l": l, "n": n, "g": 1}
    max_chunks = triton_cdiv(l, fwd.block_l)
    values = {
        # inputs, outputs and scratch; absent optional inputs get u (or g_h0) in their place
        "u_ptr": x, "delta_ptr": x, "A_ptr": f32, "B_ptr": x, "C_ptr": x, "D_ptr": f32,
        "z_ptr": x, "delta_bias_ptr": f32, "h0_ptr": x, "seq_lens_ptr": x, "out_ptr": x,
        "last_state_ptr": f32, "states_ptr": f32, "chunk_states_ptr": f32, "carry_ptr": f32,
        "adjoint_ptr": f32, "g_out_ptr": x,
        "g_last_ptr": f32, "g_u_ptr": x, "g_delta_ptr": x, "g_z_ptr": x, "g_A_ptr": f32,
        "g_A_part_ptr": f32, "g_B_ptr": f32, "g_C_ptr": f32, "g_D_ptr": f32, "g_bias_ptr": f32,
        "g_h0_ptr": f32,
        "d": d, "l": l, "n": n, "channels_per_group": d, "n_chunks": max_chunks,
        "l_bucket": l_bucket, "stride_states_chunk": max_chunks, "stride_states_slot": max_chunks,
        "stride_h0_b": 0, "stride_h0_d": 0, "stride_h0_n": 0,
        **_strides("u", "bdl", sizes), **_strides("delta", "bdl", sizes),
        **_strides("z", "bdl", sizes), **_strides("A", "dn", sizes),
        **_strides("B", "bgnl", sizes), **_strides("C", "bgnl", sizes),
        **_strides("gB", "bgnl", sizes),
    }
    flags = {"HAS_D": True, "HAS_Z": True, "HAS_DELTA_BIAS": True, "DELTA_SOFTPLUS": True,
             "HAS_SEQ_LENS": False, "REVERSE": False, "HAS_H0": False,
             "SAVE_CHUNK_STATES": True, "HAS_G_LAST": False, **(options or {})}
    jobs = []
    for name, module, function, config in (
            ("selective_scan_fwd", "triton_fwd", "_selective_scan_fwd_kernel", fwd),
            ("selective_scan_bwd", "triton_bwd", "_selective_scan_bwd_kernel", backward)):
        module = f"kernels.selective_scan.{module}"
        arg_names = getattr(import_kernel_module(module), function).arg_names
        config = replace(config, block_l=fwd.block_l)  # the backward runs the forward's chunks
        blocks = {"BLOCK_D": config.block_d, "BLOCK_N": config.block_n, "BLOCK_L": config.block_l,
                  "NUM_STAGES": getattr(config, "num_stages", 1)}
        constexprs = {k: v for k, v in {**flags, **blocks}.items() if k in arg_names}
        num_warps, num_stages = warps_stages(config)
        label = getattr(config, "label", f"D{config.block_d}-N{config.block_n}-L{config.block_l}")
        jobs.append(Job(
            kernel=name, module=module, function=function,
            args={k: v for k, v in values.items() if k in arg_names and k not in constexprs},
            constexprs=constexprs, num_warps=num_warps, num_stages=num_stages,
            config=label,
            elements_per_thread=_per_thread(config.block_d * config.block_l * config.block_n,
                                            num_warps),
            element="(d, l, n)", hot_loop="innermost loop",
            options="+".join(sorted(k for k, v in (options or {}).items() if v)) +
            "".join(f"-{k}" for k, v in sorted((options or {}).items()) if not v)))
    return jobs


def state_update_job(b: int, d: int, n: int, dtype: str) -> Job:
    """selective_state_update as its launcher compiles it: state float32 (b, d, n), x, dt,
    z (b, d) and B, C (b, n) in ``dtype``, with D, dt_bias and softplus."""
    step = import_kernel_module("kernels.state_update.triton_step")
    block_d, block_n = step.step_blocks(d, n)
    x, f32 = pointer(dtype), pointer("float32")
    bd = contiguous_strides(b, d)
    args = {"state_ptr": f32, "x_ptr": x, "dt_ptr": x, "A_ptr": f32, "B_ptr": x, "C_ptr": x,
            "D_ptr": f32, "z_ptr": x, "dt_bias_ptr": f32, "out_ptr": x,
            "d": d, "n": n, "channels_per_group": d}
    args.update(zip(("stride_state_b", "stride_state_d", "stride_state_n"),
                    contiguous_strides(b, d, n)))
    for name in ("x", "dt", "z"):
        args.update(zip((f"stride_{name}_b", f"stride_{name}_d"), bd))
    args.update(zip(("stride_A_d", "stride_A_n"), contiguous_strides(d, n)))
    for name in ("B", "C"):
        args.update(zip((f"stride_{name}_b", f"stride_{name}_g", f"stride_{name}_n"),
                        (n, n, 1)))
    return Job(kernel="selective_state_update", module=step.__name__,
               function="_state_update_kernel", args=args,
               constexprs={"HAS_D": True, "HAS_Z": True, "HAS_DT_BIAS": True, "DT_SOFTPLUS": True,
                           "BLOCK_D": block_d, "BLOCK_N": block_n},
               num_warps=4, num_stages=3, config=f"D{block_d}-N{block_n}-w4",
               elements_per_thread=_per_thread(block_d * block_n, 4), element="(d, n)",
               hot_loop="whole kernel")


def conv_jobs(b: int, d: int, l: int, width: int, dtype: str) -> list[Job]:
    """The causal conv's forward, backward and decode step as their launchers compile them
    (bias and SiLU on; Triton's default 4 warps and 3 stages)."""
    conv = import_kernel_module("kernels.causal_conv1d.triton_conv")
    block_d, block_l = conv.conv_blocks(d, l)
    x, f32 = pointer(dtype), pointer("float32")
    common = {"stride_x_b": d * l, "stride_x_d": l, "stride_x_l": 1,
              "stride_w_d": width, "stride_w_k": 1}
    flags = {"HAS_BIAS": True, "SILU": True, "WIDTH": width}
    blocks = {"BLOCK_D": block_d, "BLOCK_L": block_l}
    per_thread = _per_thread(block_d * block_l, 4)
    label = f"D{block_d}-L{block_l}-w4"
    update_d = conv.update_block_d(d)
    block_w = 1 << (width - 1).bit_length()
    return [
        Job("causal_conv1d_fwd", conv.__name__, "_conv_fwd_kernel",
            {"x_ptr": x, "w_ptr": x, "bias_ptr": x, "out_ptr": x, "d": d, "l": l, **common},
            {**flags, **blocks}, 4, 3, label, per_thread, "(d, l)", "whole kernel"),
        Job("causal_conv1d_bwd", conv.__name__, "_conv_bwd_kernel",
            {"x_ptr": x, "w_ptr": x, "bias_ptr": x, "g_out_ptr": x, "g_x_ptr": x,
             "g_w_part_ptr": f32, "g_bias_part_ptr": f32, "d": d, "l": l,
             "n_l_blocks": triton_cdiv(l, block_l), **common},
            {**flags, **blocks}, 4, 3, label, per_thread, "(d, l)", "whole kernel"),
        Job("causal_conv1d_update", conv.__name__, "_conv_update_kernel",
            {"x_ptr": x, "state_ptr": x, "w_ptr": x, "bias_ptr": x, "out_ptr": x, "d": d,
             "stride_x_b": d, "stride_x_d": 1, "stride_s_b": d * width, "stride_s_d": width,
             "stride_s_k": 1, "stride_w_d": width, "stride_w_k": 1},
            {**flags, "BLOCK_W": block_w, "BLOCK_D": update_d}, 4, 3, f"D{update_d}-w4",
            _per_thread(update_d * block_w, 4), "(d, w)", "whole kernel"),
    ]


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------
# Compiling


def _specialise(value):
    """(signature type, divisible by 16, constant) of one argument, as Triton's launcher
    specialises it."""
    if isinstance(value, dict):
        return "*" + value["ptr"], True, None
    if isinstance(value, bool):
        return "u1", False, None
    if value == 1:
        return "constexpr", False, 1
    kind = "i32" if -2**31 <= value < 2**31 else "i64"
    return kind, value % 16 == 0, None


def compile_job(job: Job):
    """Triton's CompiledKernel of ``job`` for sm_90a (no device needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(import_kernel_module(job.module), job.function)
    missing = [a for a in fn.arg_names if a not in job.args and a not in job.constexprs]
    unknown = [a for a in {**job.args, **job.constexprs} if a not in fn.arg_names]
    if missing or unknown:
        raise ValueError(f"{job.kernel}: arguments missing {missing}, unknown {unknown}")
    signature, constexprs, attrs = {}, {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in job.constexprs:
            signature[name] = "constexpr"
            constexprs[name] = job.constexprs[name]
            continue
        kind, divisible, constant = _specialise(job.args[name])
        signature[name] = kind
        if constant is not None:
            constexprs[name] = constant
        if divisible:
            attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(source, target=GPUTarget("cuda", CAPABILITY, 32),
                          options={"num_warps": job.num_warps, "num_stages": job.num_stages,
                                   "enable_fp_fusion": job.enable_fp_fusion})


def _tool(name: str) -> str:
    import triton
    if name == "ptxas":
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(CAPABILITY).path
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(bundled) if bundled.exists() else name


# ---------------------------------------------------------------------------------------
# Reading the machine code

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def ptxas_usage(ptx: str, fp_fusion: bool) -> dict:
    """registers, spill bytes (stores + loads) and stack from ``ptxas -v`` on the PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        cmd = [_tool("ptxas"), "-v", f"--gpu-name=sm_{CAPABILITY}a", str(src),
               "-o", str(Path(tmp) / "kernel.cubin")]
        if not fp_fusion:
            cmd.insert(2, "--fmad=false")
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"),
            "spill_bytes": number(r"(\d+) bytes spill stores") + number(r"(\d+) bytes spill loads"),
            "stack_bytes": number(r"(\d+) bytes stack frame")}


def sass_instructions(cubin: bytes) -> list[tuple[int, str]]:
    """(address, instruction) of every SASS instruction, from ``cuobjdump -sass``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([_tool("cuobjdump"), "-sass", str(path)], capture_output=True,
                              text=True, check=True).stdout
    return [(int(m.group(1), 16), m.group(2)) for m in _INSTRUCTION.finditer(text)]


def innermost_loop(code: list[tuple[int, str]]) -> list[str]:
    """The body of the largest innermost loop: a backward branch's range that holds no
    other backward branch. The whole kernel when it has no loop (the branch-to-itself
    after EXIT is no loop)."""
    loops = []
    for address, text in code:
        match = re.search(r"\bBRA\b[^0-9]*0x([0-9a-f]+)", text)
        if match and int(match.group(1), 16) < address:  # not the trap after EXIT (BRA to itself)
            loops.append((int(match.group(1), 16), address))
    innermost = [(s, e) for s, e in loops
                 if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in loops)]
    if not innermost:
        return [text for _, text in code]
    start, end = max(innermost, key=lambda r: r[1] - r[0])
    return [text for address, text in code if start <= address <= end]


def opcode(text: str) -> str:
    """The opcode of a SASS instruction, without predicate and modifiers."""
    text = re.sub(r"^@!?U?P[T0-9]+\s+", "", text.strip())
    return text.split()[0].split(".")[0] if text else ""


def count_loop(body: list[str]) -> dict:
    ops = [opcode(t) for t in body]
    ops = [o for o in ops if o not in ("NOP",)]
    return {"loop_instructions": len(ops),
            "shuffles": sum(o == "SHFL" for o in ops),
            "barriers": sum(o in ("BAR", "BARRIER") for o in ops),
            "mufu": sum(o == "MUFU" for o in ops),
            "atomics": sum(o in ("RED", "ATOM", "ATOMG", "REDG") for o in ops),
            "global_loads": sum(o in ("LDG",) for o in ops),
            "shared_accesses": sum(o in ("LDS", "STS", "LDSM") for o in ops)}


def profile_job(job: Job) -> dict:
    """One row: the job's launch, its resources and its hot loop's counts per element."""
    import triton
    row = {"kernel": job.kernel, "config": job.config, "options": job.options,
           "triton": triton.__version__,
           "hot_loop": job.hot_loop, "element": job.element,
           "elements_per_thread": job.elements_per_thread}
    compiled = compile_job(job)
    row.update(ptxas_usage(compiled.asm["ptx"], job.enable_fp_fusion))
    row["shared_bytes"] = int(compiled.metadata.shared)
    counts = count_loop(innermost_loop(sass_instructions(compiled.asm["cubin"])))
    row.update(counts)
    per = job.elements_per_thread
    row["sass_per_element"] = counts["loop_instructions"] / per
    for name in ("shuffles", "barriers", "mufu", "atomics"):
        row[f"{name}_per_element"] = counts[name] / per
    return row


# ---------------------------------------------------------------------------------------
# The script: a request on stdin, rows on stdout


def build_jobs(request: dict) -> list[Job]:
    """Jobs for ``request``: {"scan": {b, d, l, n, dtype}, "state_update": {b, d, n, dtype},
    "conv": {b, d, l, width, dtype}, "scan_configs": [[fwd, bwd], ...] (LaunchConfig
    fields or null for the launcher's default), "scan_options": [{HAS_H0: true, ...}, ...]
    (each set of scan options, default: the Mamba block's), "kernels": [names] (empty:
    all), "kernels_root": a checkout to take the kernels from}. Ops whose rows are not
    wanted are not built (an older checkout may lack them)."""
    wanted = request.get("kernels") or []
    want = lambda *names: not wanted or any(n in wanted for n in names)  # noqa: E731
    jobs = []
    if "scan" in request and want("selective_scan_fwd", "selective_scan_bwd"):
        common = import_kernel_module("kernels.selective_scan.triton_common")
        for fwd, bwd in request.get("scan_configs") or [[None, None]]:
            for options in request.get("scan_options") or [None]:
                jobs += scan_jobs(**request["scan"], options=options,
                                  forward=common.LaunchConfig(**fwd) if fwd else None,
                                  backward=common.LaunchConfig(**bwd) if bwd else None)
    if "state_update" in request and want("selective_state_update"):
        jobs.append(state_update_job(**request["state_update"]))
    if "conv" in request and want("causal_conv1d_fwd", "causal_conv1d_bwd", "causal_conv1d_update"):
        jobs += conv_jobs(**request["conv"])
    return [j for j in jobs if want(j.kernel)]


def main() -> None:
    global KERNELS_ROOT
    request = json.load(sys.stdin)
    KERNELS_ROOT = Path(request.get("kernels_root") or ROOT).resolve()
    sys.path.insert(0, str(KERNELS_ROOT))
    rows = []
    for job in build_jobs(request):
        try:
            rows.append(profile_job(job))
        except Exception as error:  # reported in the row, so one failure loses no others
            rows.append({"kernel": job.kernel, "config": job.config, "options": job.options,
                         "error": f"{type(error).__name__}: {error}"[:2000]})
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
