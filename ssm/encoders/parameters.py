"""Parameter counts, and the one definition of "matched" that fair comparisons use."""
from __future__ import annotations

from torch import nn

# Towers compared with each other may differ in trainable parameters by at most this much:
# largest / smallest - 1 <= MATCH_TOLERANCE.
MATCH_TOLERANCE = 0.10


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_spread(counts) -> float:
    """largest / smallest - 1 over the counts (0 for a single one)."""
    counts = list(counts)
    if not counts or min(counts) <= 0:
        raise ValueError(f"counts must be positive parameter counts, got {counts}")
    return max(counts) / min(counts) - 1


def parameters_matched(counts, tolerance: float = MATCH_TOLERANCE) -> bool:
    """Whether the counts lie within ``tolerance`` of each other (see MATCH_TOLERANCE)."""
    return parameter_spread(counts) <= tolerance


def parameter_report(modules: dict, tolerance: float = MATCH_TOLERANCE) -> tuple[str, bool]:
    """A Markdown table of parameter counts, and whether they are matched within
    ``tolerance`` (the bar for a fair comparison)."""
    counts = {name: parameter_count(m) for name, m in modules.items()}
    smallest = min(counts.values())
    lines = ["| module | parameters | vs smallest |", "|---|---:|---:|"]
    lines += [f"| {name} | {count:,} | +{count / smallest - 1:.1%} |"
              for name, count in counts.items()]
    return "\n".join(lines), parameters_matched(counts.values(), tolerance)
