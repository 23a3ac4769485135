"""The caption decoder comparison (``+experiment=compare_decoders``): the comparison
machinery of ``ssm.report.comparison`` with the caption metrics, the decoders' parameter
counts held to the matching rule, and generation speed against length.

Generation speed does not depend on training, so it is measured once per decoder when the
sweep ends (``measure_generation``: each decoder as the sweep's jobs configured it, random
weights, one after another in one process) into generation_bench.csv in the sweep dir,
which the report then shows as a table and a plot.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssm.report import plots
from ssm.report.comparison import ReportSpec
from ssm.report.generation import format_generation_table, generation_plot, read_rows
from ssm.tasks.bench_generation import CSV_NAME as GENERATION_CSV, run_bench, write_rows

METRICS = (
    ("caption_object_f1", "object F1", ".3f"),
    ("caption_seen_object_f1", "object F1, seen-pair scenes", ".3f"),
    ("caption_heldout_object_f1", "object F1, held-out-pair scenes", ".3f"),
    ("caption_novel_pair_recall", "novel pairs named", ".3f"),
    # ssm.eval.composition: the shape the decoder picks for a novel pair after the true
    # colour word, and after a colour word no held-out pair uses.
    ("caption_forced_shape_novel", "novel shape, teacher-forced", ".3f"),
    ("caption_forced_shape_novel_neutral", "novel shape, neutral colour word", ".3f"),
    ("caption_exact", "exact scene", ".3f"),
    ("bleu4", "BLEU-4", ".3f"),
    ("cider", "CIDEr-D", ".3f"),
    ("samples_per_s", "samples/s", ".0f"),
    ("peak_mem_mb", "peak MB", ".0f"),
)
CAPTION_BARS = [("caption_object_f1", "object F1"),
                ("caption_seen_object_f1", "object F1, seen pairs"),
                ("caption_heldout_object_f1", "object F1, held-out pairs"),
                ("caption_novel_pair_recall", "novel pairs named"),
                ("caption_exact", "exact scene"), ("bleu4", "BLEU-4")]


def measure_generation(records, out_dir: Path, lengths, batch_sizes, repeats: int = 1,
                       device=None) -> Path:
    """Time generation for each decoder of the sweep's complete runs (its first run's
    config) and write generation_bench.csv into ``out_dir``; returns its path."""
    configs = {}
    for record in records:
        name = record.value("model/decoder")
        if record.status == "complete" and name is not None and name not in configs:
            configs[name] = OmegaConf.create(record.config)
    if not configs:
        raise ValueError("no complete run with a model/decoder choice to time")
    first = next(iter(configs.values()))
    resolved = lambda cfg, key: OmegaConf.to_container(OmegaConf.select(cfg, key),  # noqa: E731
                                                       resolve=True)
    bench = OmegaConf.create({
        "model": {"image_encoder": resolved(first, "model.image_encoder")},
        "decoders": {name: resolved(cfg, "model.decoder") for name, cfg in configs.items()},
        "data": {"image_size": first.data.image_size}, "lengths": list(lengths),
        "batch_sizes": list(batch_sizes), "repeats": repeats, "seed": 0})
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return write_rows(run_bench(bench, device), out_dir)


def generation_rows(records, out_dir) -> list[dict]:
    """The rows of generation_bench.csv in ``out_dir``, else in the runs' sweep dirs."""
    places = [Path(out_dir)] if out_dir else []
    places += list(dict.fromkeys(r.path.parent for r in records if r.path is not None))
    for place in places:
        rows = read_rows(place / GENERATION_CSV)
        if rows:
            return rows
    return []


def _notes(records, out_dir) -> list[str]:
    done = [r.results for r in records if r.status == "complete"]
    lines = []
    images = {r.get("caption_val_images") for r in done} - {None}
    held = {r.get("caption_heldout_scenes") for r in done} - {None}
    if len(images) == 1 and len(held) == 1:
        lines.append(f"Captions generated for {images.pop()} held-out scenes ({held.pop()} of "
                     "them with a (shape, colour) pair never seen in training), parsed back "
                     "into objects: object F1 micro-averaged over scenes; exact scene: every "
                     "object, region and relation right and nothing else said. BLEU-4 and "
                     "CIDEr-D: pycocoevalcap's scorers against the scene's reference captions.")
    rows = generation_rows(records, out_dir)
    lines += ["", "## Generation speed", ""]
    if rows:
        lines += ["Measured when the sweep ended, each decoder as its runs configured it "
                  f"(random weights), on {rows[0].get('device', 'this machine')}.", "",
                  format_generation_table(rows)]
    else:
        lines.append(f"Not measured: no {GENERATION_CSV} here (it is written when the sweep "
                     "ends; the sweep's log says why it is missing).")
    return lines


def _plots(summaries, records, out_dir) -> list[str]:
    written = []
    if plots.learning_curves(summaries, out_dir / "learning_curves.png"):
        written.append("learning_curves.png")
    if plots.metric_bars_figure(summaries, out_dir / "captions.png", CAPTION_BARS,
                                "Caption metrics (mean ± std over seeds)"):
        written.append("captions.png")
    if generation_plot(generation_rows(records, out_dir), out_dir / "generation.png"):
        written.append("generation.png")
    return written


DECODERS = ReportSpec("Caption decoder comparison", "decoder", "model/decoder", METRICS,
                      "params_decoder", "params (decoder)", "Decoder", _notes, _plots)
