"""Every experiment preset composes and runs (shrunk)."""
from pathlib import Path

import pytest

from ssm.tasks import train
from run_config import CONF

PRESETS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


def test_there_are_presets():
    assert {"blip", "siglip_vit"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_smoke_run(compose_train, tmp_path, preset):
    image = "vit" if "vit" in preset else "convnet"
    cfg = compose_train(f"+experiment={preset}", image=image)
    results = train(cfg, tmp_path)
    assert results["steps"] == cfg.trainer.max_steps
    # A preset may skip evaluation (eval.enabled=false: timing sweeps such as long_captions).
    assert ("t2i_r5" in results) == cfg.eval.enabled
    assert results["step_ms_median"] > 0 and results["timed_steps"] == (
        cfg.trainer.max_steps - cfg.trainer.timing_warmup)
    # Measured, not defaulted: training allocates activations, gradients, optimizer state.
    assert results["peak_mem_kind"] == "cpu_rss_growth" and results["peak_mem_mb"] > 0
