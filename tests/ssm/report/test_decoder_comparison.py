"""The compare-decoders report from a real quick sweep, and caption.py from the command
line, run as a user runs them."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ssm.data.scenes import SyntheticScenes
from ssm.report.callbacks import REPORTS
from ssm.report.comparison import write_comparison_report
from ssm.report.generation import read_rows

ROOT = Path(__file__).resolve().parents[3]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def decoder_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("decoders") / "sweep"
    done = subprocess.run([sys.executable, "experiments/train.py", "-m",
                           "+experiment=compare_decoders_quick", f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir, done.stdout


DECODERS = ("mamba", "mamba_state", "mamba_patch_state", "transformer")


@pytest.mark.slow  # a subprocess sweep: eight small training runs
def test_quick_decoder_sweep_writes_the_report(decoder_sweep):
    sweep_dir, stdout = decoder_sweep
    assert "Comparison report:" in stdout
    markdown = (sweep_dir / "comparison.md").read_text()
    assert markdown.startswith("# Caption decoder comparison")
    assert "8 jobs: 8 complete, 0 failed, 0 incomplete, 0 missing" in markdown
    assert "apart from `model.decoder`, `seed`" in markdown
    assert "Decoder parameters: largest/smallest − 1 =" in markdown
    assert "## Generation speed" in markdown and "### Batch 4" in markdown
    for decoder in DECODERS:
        assert f"| {decoder} |" in markdown
    for name in ("learning_curves.png", "captions.png", "generation.png"):
        assert (sweep_dir / name).read_bytes().startswith(PNG_SIGNATURE), name


@pytest.mark.slow  # a subprocess sweep: eight small training runs
def test_decoder_report_numbers_are_the_runs_mean(decoder_sweep, tmp_path):
    sweep_dir, _ = decoder_sweep
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    path = write_comparison_report([sweep_dir], tmp_path, spec=REPORTS["decoders"])
    rows = [line.split(",") for line in (path.parent / "comparison.csv").read_text().splitlines()]
    header, table = rows[0], {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert header[:2] == ["decoder", "params_decoder"]
    for decoder in DECODERS:
        mine = [r for r in results if r["decoder"] == decoder]
        for key in ("caption_object_f1", "caption_seen_object_f1", "bleu4", "cider"):
            assert float(table[decoder][f"{key}_mean"]) == pytest.approx(
                statistics.fmean(r[key] for r in mine))
    timed = read_rows(sweep_dir / "generation_bench.csv")
    assert {(r["decoder"], r["batch_size"], r["new_tokens"]) for r in timed} == {
        (d, b, n) for d in DECODERS for b in (1, 4) for n in (4, 16)}
    cache = {(r["decoder"], r["batch_size"], r["new_tokens"]): r["cache_mb"] for r in timed}
    assert cache[("mamba", 4, 4)] == cache[("mamba", 4, 16)]
    assert cache[("transformer", 4, 16)] > cache[("transformer", 4, 4)]
    rebuilt = path.read_text()  # rebuilt elsewhere, the report still finds the sweep's timings
    assert f"{timed[0]['tokens_per_s']:.0f} tok/s" in rebuilt


@pytest.mark.slow  # a subprocess per command
def test_caption_command_line(decoder_sweep, tmp_path):
    sweep_dir, _ = decoder_sweep
    checkpoint = sweep_dir / "0" / "checkpoints" / "last.pt"
    image = SyntheticScenes("val", 1, image_size=40)[0]["image"]
    path = tmp_path / "scene.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(path)
    done = subprocess.run([sys.executable, "experiments/caption.py", f"checkpoint={checkpoint}",
                           f"images=[{path}]", "strategy=beam",
                           f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"{path}\t")
    missing = subprocess.run([sys.executable, "experiments/caption.py", f"checkpoint={checkpoint}",
                              f"images=[{tmp_path / 'nope.png'}]",
                              f"hydra.run.dir={tmp_path / 'run2'}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "nope.png" in missing.stderr
