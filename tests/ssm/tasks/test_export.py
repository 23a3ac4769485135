"""A run's checkpoint as a self-contained export, and the entry points around it."""
import json
import subprocess
import sys

import pytest
import torch

from ssm.tasks.build import model_from_checkpoint
from ssm.tasks.export import export_checkpoint, load_export, load_for_inference
from run_config import ROOT


def test_export_rebuilds_the_run_model(tiny_run, tmp_path):
    export = export_checkpoint(tiny_run, tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    assert config["model"]["_target_"] == "ssm.models.CLIP"
    assert config["tokenizer"] == {"_target_": "ssm.data.ByteTokenizer"}
    assert config["source"]["step"] == 2 and config["image_size"] == 32
    ready, run = load_export(export), model_from_checkpoint(tiny_run)
    images = torch.rand(3, 3, 32, 32)
    tokens, mask = ready.tokenizer.batch_encode(["a", "a red circle", "two stars"],
                                                ready.max_length)
    with torch.no_grad():
        out, expected = ready.model(images, tokens, mask), run.model.eval()(images, tokens, mask)
    torch.testing.assert_close(out.image_features, expected.image_features, rtol=0, atol=0)
    torch.testing.assert_close(out.text_features, expected.text_features, rtol=0, atol=0)


def test_load_for_inference_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_for_inference(tmp_path / "nothing.pt")


@pytest.mark.slow
def test_entry_points_export_and_load_without_hydra(tiny_run, tmp_path):
    """experiments/export.py writes the export; a fresh interpreter loads it with
    ssm.models.load_model and never imports Hydra; experiments/search.py searches with it."""
    export = tmp_path / "export"
    subprocess.run([sys.executable, "experiments/export.py", f"checkpoint={tiny_run}",
                    f"output={export}", f"hydra.run.dir={tmp_path / 'export_run'}"],
                   cwd=ROOT, check=True)
    code = ("import sys; from ssm.models import load_model; "
            f"model, info = load_model({str(export)!r}); "
            "assert 'hydra' not in sys.modules, 'hydra was imported'; print(type(model).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "CLIP"
    subprocess.run([sys.executable, "experiments/write_scenes.py", f"out={tmp_path / 'scenes'}",
                    "n=6", "image_size=32", f"hydra.run.dir={tmp_path / 'scenes_run'}"],
                   cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "experiments/search.py", f"checkpoint={export}",
                          f"images={tmp_path / 'scenes'}",
                          "query=a red circle left of a blue square", "k=3",
                          f"hydra.run.dir={tmp_path / 'search_run'}"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "query: 'a red circle left of a blue square'"
    assert sum(line.strip().startswith(("1 ", "2 ", "3 ")) for line in lines) == 3
    assert (tmp_path / "search_run" / "contact_sheet.png").is_file()
