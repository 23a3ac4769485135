"""Build-on-first-use for the ops' compiled CPU paths (torch.utils.cpp_extension).

Each op keeps its C++ source in its own folder and loads it through :class:`CppExtension`;
the shared C++ (vector types, vector exp/log, the task scheduler) is ``cpu_simd.h`` beside
this file, on every build's include path. A build takes about a minute, says so on stderr
before it starts, and is cached on disk (TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions) under a name keyed by this CPU's instruction set (the code is
built with -march=native; KERNELS_MARCH=x86-64-v3, say, builds for another target, e.g.
one valgrind can run) and by the sources' contents. Where no compiler works the
reason is kept: ``available()`` is False and ``load()`` raises it again.

Threads: the C++ parallelises through ``at::parallel_for``, whose OpenMP pragmas are
compiled into the extension. ``-fopenmp`` links ``libgomp.so.1``; torch's wheel ships its
own ``libgomp.so.1`` (same soname), already loaded with torch, so the loader binds the
extension to that one runtime and its thread team instead of starting a second one.
``shared_openmp_runtime()`` checks this from /proc/self/maps.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

COMMON = Path(__file__).resolve().parent
SHARED_HEADERS = (COMMON / "cpu_simd.h",)


def cpu_tag() -> str:
    """A short id of this CPU's instruction set, so -march=native builds never mix."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _sources_tag(paths) -> str:
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:8]


class CppExtension:
    """One C++ source file, compiled and imported the first time it is needed."""

    def __init__(self, name: str, source: Path, what: str):
        self.name, self.source, self.what = name, Path(source), what
        self._module = None
        self.error = None  # why the build failed, once it has
        self._warned = False

    def load(self):
        """The compiled module, building it on first use; RuntimeError if it can't be."""
        if self._module is not None:
            return self._module
        if self.error is not None:
            raise RuntimeError(self.error)
        from torch.utils import cpp_extension

        march = os.environ.get("KERNELS_MARCH", "native")
        target = cpu_tag() if march == "native" else march.replace("-", "_").replace(".", "_")
        name = f"{self.name}_{target}_{_sources_tag((self.source, *SHARED_HEADERS))}"
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if not (build_dir / f"{name}.so").exists():
            print(f"kernels: compiling the {self.what} into {build_dir} "
                  "(once per machine, about a minute)...", file=sys.stderr, flush=True)
        # -ffp-contract=fast: a * b + c as one FMA, which GCC's ISO modes (-std=c++17)
        # otherwise forgo; the vector polynomials are chains of them. (-ffast-math would
        # also break the exp's rounding step, so it is not used.)
        flags = ["-O3", "-fopenmp", "-ffp-contract=fast"]
        if platform.machine() in ("x86_64", "AMD64"):
            flags.append(f"-march={march}")
        elif platform.machine() in ("aarch64", "arm64"):
            flags.append(f"-mcpu={march}")
        try:
            self._module = cpp_extension.load(
                name=name, sources=[str(self.source)], extra_cflags=flags,
                extra_include_paths=[str(COMMON)], extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # no compiler, no ninja, headers missing...
            self.error = f"the {self.what} extension could not be built: {exc}"
            raise RuntimeError(self.error) from exc
        return self._module

    def available(self) -> bool:
        """True when the extension is (or can be) loaded; builds it if needed."""
        try:
            self.load()
        except RuntimeError:
            return False
        return True

    def auto_backend(self, device: torch.device) -> str:
        """backend="auto" off CUDA: "cpu" when ``device`` is the CPU and this extension
        loads; otherwise "reference", with a warning (once) that says why."""
        if device.type == "cpu" and self.available():
            return "cpu"
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.error}; backend='auto' uses the slow reference on CPU instead",
                          RuntimeWarning, stacklevel=4)
        return "reference"


def shared_openmp_runtime() -> bool:
    """Whether this process has exactly one OpenMP runtime (libgomp/libiomp) mapped: the
    compiled ops then share torch's thread team. Linux only; True where it can't tell."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return True
    runtimes = {p for p in paths if Path(p).name.startswith(("libgomp", "libiomp", "libomp"))}
    return len(runtimes) <= 1
