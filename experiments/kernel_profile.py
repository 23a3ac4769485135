"""Static kernel profile entry point: python experiments/kernel_profile.py [overrides]

Compiles every Triton kernel of the package for sm_90a (no GPU needed) and writes
kernel_profile.csv and kernel_profile.md into the Hydra run dir; prints the table and
whether the issue-11 targets are met. ``triton_python=/tmp/venv36/bin/python`` compiles
with that interpreter's Triton instead (e.g. 3.6, the GPU machines' version);
``kernels_root=DIR`` compiles the kernels of another checkout (e.g. an older commit's, from
``git archive <commit> kernels | tar -x -C DIR``).
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kernels.bench.kernel_profile import build_request, run_worker, write_outputs


def profile(cfg: DictConfig, out_dir: Path) -> list[dict]:
    request = build_request(OmegaConf.to_container(cfg.scan),
                            OmegaConf.to_container(cfg.state_update),
                            OmegaConf.to_container(cfg.conv), cfg.candidates, list(cfg.kernels),
                            cfg.kernels_root, OmegaConf.to_container(cfg.scan_options))
    rows = run_worker(request, cfg.triton_python, cfg.timeout_s)
    version = next((r["triton"] for r in rows if "triton" in r), "?")
    s = cfg.scan
    title = (f"Static sm_90a profile (Triton {version}); scan ({s.b}, {s.d}, {s.l}, {s.n}) "
             f"{s.dtype}")
    csv_path, md_path = write_outputs(rows, out_dir, title)
    print(md_path.read_text(), flush=True)
    print(f"wrote {csv_path} and {md_path}", flush=True)
    return rows


@hydra.main(config_path="../conf", config_name="kernel_profile", version_base="1.3")
def main(cfg: DictConfig) -> None:
    profile(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
