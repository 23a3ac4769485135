"""The pretrained-load benchmark, run at a tiny size: it measures and writes its numbers."""
import json

from hydra import compose, initialize_config_dir

from ssm.tasks.bench_pretrained import bench_pretrained
from run_config import CONF


def test_tiny_bench_writes_times_and_errors(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="bench_pretrained",
                      overrides=["d_model=16", "n_layer=2", "vocab_size=64", "repeats=2"])
    results = bench_pretrained(cfg, tmp_path)
    assert json.loads((tmp_path / "pretrained_load.json").read_text()) == results
    assert results["load_s_median"] > 0 and results["repeats"] == 2
    assert results["logits_rel_error"] < 1e-5 and results["states_rel_error_worst_row"] < 1e-5
    assert results["layer_rel_error_worst"] < 1e-5
    assert not (tmp_path / "model").exists()  # keep_model=false cleans up
