"""Captioning end to end on CPU: loss=caption and loss=blip runs, the two-stage recipe
(init_from, freeze), captioning image files, the generation benchmark, and bad input."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from ssm.data import BadImage, ByteTokenizer
from ssm.data.scenes import SyntheticScenes
from ssm.report.generation import write_generation_report
from ssm.tasks import evaluate_checkpoint, train
from ssm.tasks.bench_generation import bench_generation
from ssm.tasks.caption import NoDecoder, caption_images
from ssm.tasks.evaluate import load_run
from ssm.train.checkpoint import load_checkpoint
from run_config import CONF, compose_train

FAST_CAPTIONS = "eval.caption.max_new_tokens=12"
CAPTION_KEYS = {"caption_object_f1", "caption_exact", "bleu4", "cider", "decoder",
                "caption_object_precision", "caption_object_recall", "params_decoder"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A contrastive run, and a captioning run started from it with the image tower frozen."""
    root = tmp_path_factory.mktemp("captioning")
    results = {}
    for name, overrides in (("itc", ()), ("caption", (
            "loss=caption", FAST_CAPTIONS, f"init_from={root / 'itc' / 'checkpoints' / 'last.pt'}",
            "freeze.image_encoder=true"))):
        cfg = compose_train(*overrides)
        results[name] = train(cfg, root / name)  # writes .hydra/config.yaml itself
    return root, results["itc"], results["caption"]


def test_caption_run_results(runs):
    _, _, caption = runs
    assert CAPTION_KEYS <= set(caption) and caption["decoder"] == "MambaCaptionDecoder"
    assert caption["caption_val_images"] == 16 and "caption_heldout_object_f1" in caption
    # The composition diagnostic (ssm.eval.composition) on the built-in scenes.
    forced = {k: v for k, v in caption.items() if k.startswith("caption_forced_shape_")}
    assert forced.pop("caption_forced_shape_neutral_colour") == "blue"
    assert set(forced) == {f"caption_forced_shape_{k}" for k in
                           ("seen", "novel", "seen_neutral", "novel_neutral")}
    assert all(0 <= v <= 1 for v in forced.values())


@pytest.mark.slow  # three training runs (the default suite trains the Mamba decoder above)
@pytest.mark.parametrize("decoder", ["mamba", "mamba_state", "mamba_patch_state", "transformer"])
def test_caption_runs_report_caption_metrics(hydra_run, tmp_path, decoder):
    overrides = ("loss=caption", f"model/decoder={decoder}", FAST_CAPTIONS)
    hydra_run(*overrides)
    results = train(compose_train(*overrides), tmp_path)
    assert CAPTION_KEYS <= set(results) and results["decoder"] == decoder
    assert results["caption_val_images"] == 16 and "caption_heldout_object_f1" in results
    for key in ("caption_object_f1", "caption_exact", "bleu4"):
        assert 0 <= results[key] <= 1
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "loss_caption" in lines[0] and "loss_itc" not in lines[0]
    assert json.loads((tmp_path / "results.json").read_text())["decoder"] == decoder


def test_blip_trains_its_three_terms(hydra_run, tmp_path):
    hydra_run("loss=blip", FAST_CAPTIONS)
    results = train(compose_train("loss=blip", FAST_CAPTIONS), tmp_path)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert {"loss_itc", "loss_itm", "loss_caption"} <= set(line)
    assert {"t2i_r5", "itm_acc", "caption_object_f1"} <= set(results) and results["loss"] == "blip"


def test_a_checkpoint_is_rescored_under_other_decoding(runs, tmp_path):
    """evaluate_checkpoint(caption=...) replaces the run's eval.caption settings: guidance
    1 reproduces the run's caption metrics, guidance 3 decodes otherwise, a bad scale is
    named before anything runs."""
    root, _, caption = runs
    checkpoint = root / "caption" / "checkpoints" / "last.pt"
    same, _ = evaluate_checkpoint(checkpoint, output=tmp_path / "same.json",
                                  caption={"guidance": 1.0})
    for key in ("caption_object_f1", "bleu4", "cider"):
        assert same[key] == caption[key], key
    guided, path = evaluate_checkpoint(checkpoint, output=tmp_path / "guided.json",
                                       caption={"guidance": 3.0, "strategy": "greedy"})
    assert path.exists() and CAPTION_KEYS - {"decoder", "params_decoder"} <= set(guided)
    with pytest.raises(ValueError, match="guidance must be a number >= 0"):
        evaluate_checkpoint(checkpoint, output=tmp_path / "bad.json", caption={"guidance": -1})


def test_itc_runs_build_no_decoder(runs):
    _, itc, _ = runs
    assert "decoder" not in itc and "caption_object_f1" not in itc


def test_init_from_loads_the_towers_and_freezing_keeps_the_image_tower(runs):
    root, _, caption = runs
    pretrained = load_checkpoint(root / "itc" / "checkpoints" / "last.pt")["model"]
    tuned = load_checkpoint(root / "caption" / "checkpoints" / "last.pt")["model"]
    image_keys = [k for k in pretrained if k.startswith("image_encoder.")]
    assert image_keys and all(torch.equal(tuned[k], pretrained[k]) for k in image_keys)
    assert any(k.startswith("decoder.") for k in tuned)
    assert caption["init_from"].endswith("last.pt") and caption["frozen"] == ["image_encoder"]
    assert caption["init_fresh"] == sum(k.startswith("decoder.") for k in tuned)
    assert caption["steps"] == 4  # a fresh schedule: the checkpoint's step is not taken


def _write_images(folder, size=48):
    """Two scenes as files: an RGB PNG at another size, and a grey JPEG."""
    data = SyntheticScenes("val", 2, image_size=size)
    paths = []
    for i, fmt in enumerate(("png", "jpg")):
        pixels = (data[i]["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        image = Image.fromarray(pixels)
        path = folder / f"scene{i}.{fmt}"
        (image if fmt == "png" else image.convert("L")).save(path)
        paths.append(path)
    return paths


def test_caption_images_prints_one_caption_per_file(runs, tmp_path):
    root, _, _ = runs
    paths = _write_images(tmp_path)
    captions = caption_images(root / "caption" / "checkpoints" / "last.pt", paths,
                              max_new_tokens=10)
    assert [p for p, _ in captions] == [str(p) for p in paths]
    assert all(isinstance(text, str) and len(text) <= 10 for _, text in captions)
    beams = caption_images(root / "caption" / "checkpoints" / "last.pt", paths, 10,
                           {"name": "beam", "num_beams": 2})
    assert len(beams) == 2


def test_caption_errors_are_named(runs, tmp_path):
    root, _, _ = runs
    with pytest.raises(NoDecoder, match="no caption decoder"):
        caption_images(root / "itc" / "checkpoints" / "last.pt", _write_images(tmp_path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(BadImage, match="broken.png"):
        caption_images(root / "caption" / "checkpoints" / "last.pt", [broken])
    with pytest.raises(ValueError, match="unknown strategy"):
        caption_images(root / "caption" / "checkpoints" / "last.pt", [broken], strategy="best")


def test_generate_names_bad_images(runs):
    root, _, _ = runs
    model = load_run(root / "caption" / "checkpoints" / "last.pt", "cpu")[0].model
    with pytest.raises(ValueError, match="3 channels"):
        model.generate(torch.rand(2, 1, 32, 32), 4, tokenizer=ByteTokenizer())
    with pytest.raises(ValueError, match="32x32"):
        model.generate(torch.rand(2, 3, 40, 40), 4, tokenizer=ByteTokenizer())
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        model.generate(torch.rand(2, 3, 32, 32), 0, tokenizer=ByteTokenizer())


def test_evaluate_checkpoint_scores_captions(runs):
    root, _, _ = runs
    results, path = evaluate_checkpoint(root / "caption" / "checkpoints" / "last.pt", "cpu")
    assert {"caption_object_f1", "bleu4", "cider", "t2i_r5"} <= set(results) and path.exists()


def test_generation_benchmark_writes_its_table(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="bench_generation", overrides=[
            "lengths=[2,6]", "batch_sizes=[1,3]", "repeats=1", "data.image_size=32",
            "model.image_encoder.width=16", "model.image_encoder.channels=[8,16]",
            "~decoders.mamba_state", "decoders.mamba.width=16", "decoders.transformer.width=16"])
    rows = bench_generation(cfg, tmp_path)
    assert len(rows) == 2 * 2 * 2
    cache = {(r["decoder"], r["batch_size"], r["new_tokens"]): r["cache_mb"] for r in rows}
    for b in (1, 3):
        assert cache[("mamba", b, 2)] == cache[("mamba", b, 6)]
        assert cache[("transformer", b, 6)] > cache[("transformer", b, 2)]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    markdown = write_generation_report(rows, tmp_path)
    assert "### Batch 3" in markdown.read_text()
    assert (tmp_path / "generation_bench.png").read_bytes().startswith(b"\x89PNG")
    assert len((tmp_path / "generation_bench.csv").read_text().splitlines()) == 9


def test_a_run_with_history_noise_never_writes_held_out_pairs(tmp_path, monkeypatch):
    from ssm.objective import Objective
    written = []
    substitute = Objective._caption

    def recording(self, model, out, tokens, mask, generator):
        written.append(self.word_noise_avoid)
        return substitute(self, model, out, tokens, mask, generator)

    monkeypatch.setattr(Objective, "_caption", recording)
    results = train(compose_train("loss=caption", "loss.caption_word_noise=0.3",
                                  FAST_CAPTIONS), tmp_path)
    held_out = SyntheticScenes("train", 1).held_out_phrases
    assert written and all(pairs == {(tuple(a.encode()), tuple(b.encode()))
                                     for a, b in held_out} for pairs in written)
    assert len(held_out) == 10 and results["caption_val_images"] == 16


def test_history_noise_needs_the_byte_tokenizer():
    from ssm.data import HFTokenizer
    from ssm.objective import Objective
    from ssm.tasks.train import _prepare_word_noise
    objective = Objective(itc=0.0, caption=1.0, caption_word_noise=0.1)
    with pytest.raises(ValueError, match="caption_word_noise needs the byte tokenizer"):
        _prepare_word_noise(objective, HFTokenizer.__new__(HFTokenizer), None)
