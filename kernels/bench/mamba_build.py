"""Build mamba-ssm's CUDA extension ``selective_scan_cuda`` for one GPU architecture from
its source distribution: nvcc on every translation unit in parallel, then one link. No
setup.py (it compiles every architecture from sm_75 to sm_121) and no ninja.

    python -m kernels.bench.mamba_build --sdist mamba_ssm-2.3.2.post1.tar.gz --out /tmp/site
    python -m kernels.bench.mamba_build --sdist ... --only selective_scan_fwd_bf16.cu  # time one

Writes ``selective_scan_cuda<ext>`` into --out (and the extracted sources, whose
``mamba_ssm`` package the benchmark imports), and prints each unit's compile time. It
compiles against the torch that runs it, or against an unpacked torch wheel (--torch-root;
its version must be the GPU machine's, as the extension links to libtorch).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The real-valued and complex kernels mamba-ssm's setup.py lists, plus the bindings.
UNITS = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_fwd_fp16.cu",
         "selective_scan_fwd_bf16.cu", "selective_scan_bwd_fp32_real.cu",
         "selective_scan_bwd_fp32_complex.cu", "selective_scan_bwd_fp16_real.cu",
         "selective_scan_bwd_fp16_complex.cu", "selective_scan_bwd_bf16_real.cu",
         "selective_scan_bwd_bf16_complex.cu"]
# mamba-ssm's own nvcc flags (setup.py), minus its architecture list.
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]


def extract(sdist: Path, into: Path) -> Path:
    """The sdist's top folder under ``into`` (extracted once)."""
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        if not (into / top).exists():
            try:
                archive.extractall(into, filter="data")
            except TypeError:  # Python without extraction filters
                archive.extractall(into)
    return into / top


def torch_flags(torch_root: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(include dirs, defines, link args) for an extension of the running torch, or of the
    torch unpacked at ``torch_root`` (its ABI flags are assumed to be the running one's)."""
    import torch
    root = Path(torch_root) if torch_root else Path(torch.__file__).parent
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    includes = [root / "include", root / "include" / "torch" / "csrc" / "api" / "include",
                cuda_home / "include", Path(sysconfig.get_paths()["include"])]
    defines = ["-DTORCH_EXTENSION_NAME=selective_scan_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    for name in ("COMPILER_TYPE", "STDLIB", "BUILD_ABI"):
        value = getattr(torch._C, f"_PYBIND11_{name}", None)
        if value:
            defines.append(f'-DPYBIND11_{name}="{value}"')
    cuda_lib = next((p for p in (cuda_home / "lib64", cuda_home / "lib") if p.exists()),
                    cuda_home / "lib64")
    link = [f"-L{root / 'lib'}", "-lc10", "-lc10_cuda", "-ltorch", "-ltorch_cpu", "-ltorch_cuda",
            "-ltorch_python", f"-L{cuda_lib}", "-lcudart"]
    return [f"-I{p}" for p in includes], defines, link


def compile_unit(source: Path, obj: Path, includes, defines, arch: int) -> float:
    """Compile one unit; returns seconds. Raises CalledProcessError with the compiler's output."""
    start = time.perf_counter()
    if source.suffix == ".cu":
        cmd = ["nvcc", "-c", str(source), "-o", str(obj), *NVCC_FLAGS,
               "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-Xcompiler", "-fPIC",
               *includes, f"-I{source.parent}", *defines]
    else:
        cmd = ["g++", "-c", str(source), "-o", str(obj), "-O3", "-std=c++17", "-fPIC",
               *includes, f"-I{source.parent}", *defines]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def build(sdist: Path, out: Path, arch: int = 90, jobs: int = 8, only=None,
          torch_root: Path | None = None) -> dict:
    """Compile (``only`` some units, or all and link); returns {unit: seconds, ...}."""
    out.mkdir(parents=True, exist_ok=True)
    src = extract(sdist, out / "src")
    csrc = src / "csrc" / "selective_scan"
    objs = out / "obj"
    objs.mkdir(exist_ok=True)
    includes, defines, link = torch_flags(torch_root)
    units = list(only) if only else UNITS
    times = {}

    def one(unit):
        times[unit] = compile_unit(csrc / unit, objs / f"{unit}.o", includes, defines, arch)
        print(f"compiled {unit} in {times[unit]:.0f} s", flush=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, units))  # re-raises the first failure
    if not only:
        target = out / f"selective_scan_cuda{sysconfig.get_config_var('EXT_SUFFIX')}"
        subprocess.run(["g++", "-shared", *[str(objs / f"{u}.o") for u in units], "-o",
                        str(target), *link], check=True, capture_output=True, text=True)
        times["link_target"] = str(target)
    times["wall_s"] = time.perf_counter() - start
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="*", help="compile just these units (no link)")
    parser.add_argument("--torch-root", type=Path, help="an unpacked torch wheel's torch/")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        sys.exit("nvcc is not on PATH")
    try:
        times = build(args.sdist, args.out, args.arch, args.jobs, args.only, args.torch_root)
    except subprocess.CalledProcessError as error:
        sys.exit(f"build failed: {' '.join(error.cmd[:3])} ...\n{error.stderr[-4000:]}")
    (args.out / "build_times.json").write_text(json.dumps(times, indent=1))
    print(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
