"""Imports point down: experiments -> ssm -> kernels, and down the layers inside each.

Every import statement of every module (function-level ones included) is read with ``ast``
and checked against the layer lists below, the same ones the README's architecture
section draws. A new folder must be placed in a list before it can be imported.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer and the layers before it.
SSM_LAYERS = ["ssm.modules", "ssm.encoders", "ssm.decoders", "ssm.models", "ssm.losses",
              "ssm.objective", "ssm.data", "ssm.train", "ssm.eval", "ssm.tasks", "ssm.report"]
KERNEL_OPS = ["kernels.selective_scan", "kernels.causal_conv1d", "kernels.state_update"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, name: str, is_package: bool) -> list[str]:
    """Absolute names of everything ``source`` (the module ``name``) imports."""
    found = []
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            # ``from pkg import mod`` may name a submodule: count it as pkg.mod.
            found += [f"{prefix}.{alias.name}" for alias in node.names]
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


def _public_kernels_name(name: str) -> bool:
    """kernels.common.*, an op's package, or a name its package exports (not a module)."""
    if _within(name, "kernels.common") or name in ("kernels", *KERNEL_OPS):
        return True
    parent = name.rpartition(".")[0]
    return parent in ("kernels", *KERNEL_OPS) and not _is_module(name)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _layer(name: str, layers: list[str]):
    return next((i for i, layer in enumerate(layers) if _within(name, layer)), None)


def violation(importer: str, imported: str):
    """Why ``importer`` may not import ``imported``, or None when it may."""
    top = importer.split(".")[0]
    target = imported.split(".")[0]
    if target not in ("kernels", "ssm", "experiments"):
        return None  # third-party or the standard library
    if top == "kernels":
        if target != "kernels":
            return f"kernels never imports {target}"
        op = next((o for o in KERNEL_OPS if _within(importer, o)), None)
        if _within(importer, "kernels.common"):
            if not _within(imported, "kernels.common"):
                return "kernels.common imports nothing else of kernels"
        elif op is not None:
            if not (_within(imported, op) or _within(imported, "kernels.common")):
                return f"an op imports only its own folder and kernels.common ({op})"
        elif importer == "kernels":
            if _within(imported, "kernels.bench"):
                return "the public ops do not import the benchmark"
        return None
    if top == "ssm":
        if target == "experiments":
            return "ssm never imports experiments"
        if target == "kernels" and not _public_kernels_name(imported):
            return "ssm imports the public ops (kernels, kernels.<op>) and kernels.common only"
        if target == "kernels":
            return None
        mine, theirs = _layer(importer, SSM_LAYERS), _layer(imported, SSM_LAYERS)
        if importer == "ssm":
            return "the ssm package itself imports nothing"
        if mine is None:
            return f"{importer} is in no layer of SSM_LAYERS"
        if theirs is None:
            return f"{imported} is in no layer of SSM_LAYERS"
        if theirs > mine:
            return f"{SSM_LAYERS[mine]} imports from a layer above it ({SSM_LAYERS[theirs]})"
    return None


def all_violations(root: Path = ROOT) -> tuple[list[str], int]:
    """The wrong imports, and how many first-party imports were checked."""
    problems, checked = [], 0
    for folder in ("kernels", "ssm", "experiments"):
        for path in sorted((root / folder).rglob("*.py")):
            name = module_name(path)
            for imported in imports(path.read_text(), name, path.name == "__init__.py"):
                checked += imported.split(".")[0] in ("kernels", "ssm", "experiments")
                why = violation(name, imported)
                if why:
                    problems.append(f"{path.relative_to(root)}: imports {imported}: {why}")
    return problems, checked


def test_every_import_points_down():
    problems, checked = all_violations()
    assert problems == []
    assert checked > 150  # every package was read


@pytest.mark.parametrize("importer,imported", [
    ("ssm.modules.mamba", "ssm.train.loop.Trainer"),               # up a layer
    ("ssm.train.loop", "ssm.eval.evaluate.Evaluator"),             # train is below eval
    ("ssm.models.clip", "experiments.train.main"),                 # into the entry points
    ("kernels.selective_scan.reference", "ssm.modules.Mamba"),     # kernels into ssm
    ("kernels.causal_conv1d.triton_conv", "kernels.selective_scan.triton_common.softplus"),
    ("kernels.common.checks", "kernels.selective_scan.validation.ScanDims"),
    ("ssm.modules.mamba", "kernels.selective_scan.cpu.EXTENSION"),  # an op's private module
    ("ssm.newfolder.thing", "ssm.data.ByteTokenizer"),             # a folder in no layer
    ("ssm.tasks.train", "kernels.bench"),                          # the benchmark package
    ("ssm.decoders.mamba", "ssm.models.CLIP"),                     # decoders sit below models
])
def test_the_checker_catches_each_kind_of_wrong_import(importer, imported):
    assert violation(importer, imported) is not None


@pytest.mark.parametrize("importer,imported", [
    ("ssm.tasks.train", "ssm.eval.evaluate.Evaluator"),
    ("ssm.modules.mamba", "kernels.selective_scan_fn"),
    ("ssm.tasks.train", "kernels.common.machine.device_name"),
    ("kernels.causal_conv1d.triton_conv", "kernels.common.launch.empty_output"),
    ("kernels.bench.kernel_bench", "kernels.selective_scan.testing.ScanCase"),
    ("experiments.train", "ssm.tasks.train"),
])
def test_the_checker_allows_downward_imports(importer, imported):
    assert violation(importer, imported) is None


def test_relative_imports_resolve_to_their_package():
    source = "from .reference import x\nfrom . import cpu\nfrom ..common.launch import y\n"
    assert imports(source, "kernels.selective_scan.interface", False) == [
        "kernels.selective_scan.reference.x", "kernels.selective_scan.cpu",
        "kernels.common.launch.y"]
