"""Search over a folder of images with a trained model, and the reverse, with the
folder's features cached beside it."""
import os
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from ssm.tasks import search as search_module
from ssm.tasks.export import export_checkpoint, load_for_inference
from ssm.tasks.search import default_cache_path, format_results, search, write_scenes
from run_config import CONF

QUERY = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def export(tiny_run, tmp_path_factory):
    return export_checkpoint(tiny_run, tmp_path_factory.mktemp("export") / "model")


@pytest.fixture
def folder(tmp_path):
    """12 scenes, one more in a subfolder, a file that is not an image and one that claims
    to be a PNG but is not."""
    images = write_scenes(tmp_path / "images", n=12, image_size=32)
    (images / "more").mkdir()
    shutil.copy(images / "scene_0003.png", images / "more" / "copy.PNG")
    (images / "broken.png").write_bytes(b"not a png at all")
    return images


def search_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="search", overrides=list(overrides))


def _direct_scores(checkpoint, names, folder, text):
    """Cosine scores computed here, without the task: the oracle for its ranking."""
    ready = load_for_inference(checkpoint, "cpu")
    from ssm.data.transforms import load_image, resize_center_crop
    images = torch.stack([resize_center_crop(load_image(folder / n), ready.image_size)
                          for n in names])
    tokens, mask = ready.tokenizer.batch_encode([text], ready.max_length)
    with torch.no_grad():
        return (ready.model.encode_image(images) @ ready.model.encode_text(tokens, mask)[0]).tolist()


def test_text_to_images(export, folder, tmp_path):
    results = search(search_cfg(f"checkpoint={export}", f"images={folder}",
                                f"query={QUERY}", "k=5"), tmp_path / "run")
    names = sorted([f"scene_{i:04d}.png" for i in range(12)] + ["more/copy.PNG"])
    scores = _direct_scores(export, names, folder, QUERY)
    best = sorted(range(len(names)), key=lambda i: -scores[i])[:5]
    assert [r["path"] for r in results["results"]] == [str(folder / names[i]) for i in best]
    assert [r["score"] for r in results["results"]] == pytest.approx([scores[i] for i in best],
                                                                     abs=1e-5)
    assert results["images"] == 13 and results["unreadable"] == 1
    assert results["unreadable_files"] == ["broken.png"] and results["from_cache"] == 0
    with Image.open(results["contact_sheet"]) as sheet:
        assert sheet.size == (5 * 160, 24 + 160 + 34)
    assert (tmp_path / "run" / "search_results.json").is_file()
    printed = format_results(results)
    assert "1 unreadable skipped" in printed and results["results"][0]["path"] in printed


def test_the_index_is_cached_beside_the_folder_and_follows_its_files(export, folder, tmp_path,
                                                                     monkeypatch):
    cfg = search_cfg(f"checkpoint={export}", f"images={folder}", f"query={QUERY}", "k=3")
    search(cfg, tmp_path / "first")
    cache = default_cache_path(folder)
    assert cache.is_file() and cache.parent == folder.parent

    embedded = []
    real = search_module._encode_images
    monkeypatch.setattr(search_module, "_encode_images",
                        lambda ready, pixels: embedded.append(len(pixels)) or real(ready, pixels))
    again = search(cfg, tmp_path / "second")
    assert embedded == [] and again["from_cache"] == 13 and again["unreadable"] == 1

    # One image changes, one goes, one comes: only the new contents are embedded.
    Image.new("RGB", (40, 40), "red").save(folder / "scene_0000.png")
    os.utime(folder / "scene_0000.png", ns=(1, 10**18))  # a surely different mtime
    (folder / "scene_0001.png").unlink()
    Image.new("RGB", (40, 40), "blue").save(folder / "new.jpg")
    changed = search(cfg, tmp_path / "third")
    assert embedded == [2] and changed["images"] == 13 and changed["from_cache"] == 11
    scores = _direct_scores(export, ["new.jpg"], folder, QUERY)
    top = {r["path"]: r["score"] for r in search(search_cfg(
        f"checkpoint={export}", f"images={folder}", f"query={QUERY}", "k=13"),
        tmp_path / "fourth")["results"]}
    assert top[str(folder / "new.jpg")] == pytest.approx(scores[0], abs=1e-5)
    assert str(folder / "scene_0001.png") not in top


def test_a_different_model_rebuilds_the_index(export, folder, tmp_path):
    cfg = search_cfg(f"checkpoint={export}", f"images={folder}", f"query={QUERY}")
    search(cfg, tmp_path / "a")
    other = shutil.copytree(export, tmp_path / "other_export")  # new file: new fingerprint
    again = search(search_cfg(f"checkpoint={other}", f"images={folder}", f"query={QUERY}"),
                   tmp_path / "b")
    assert again["from_cache"] == 0


def test_a_run_checkpoint_ranks_as_its_export(tiny_run, export, folder, tmp_path):
    args = [f"images={folder}", f"query={QUERY}", "k=4"]
    from_export = search(search_cfg(f"checkpoint={export}", *args), tmp_path / "a")
    from_run = search(search_cfg(f"checkpoint={tiny_run}", *args), tmp_path / "b")
    assert [r["path"] for r in from_run["results"]] == [r["path"] for r in from_export["results"]]


def test_image_to_captions(export, folder, tmp_path):
    results = search(search_cfg(f"checkpoint={export}", f"image={folder / 'scene_0002.png'}",
                                f"captions={folder / 'captions.txt'}", "k=3"), tmp_path / "run")
    captions = (folder / "captions.txt").read_text().splitlines()
    ready = load_for_inference(export, "cpu")
    from ssm.data.transforms import load_image, resize_center_crop
    image = resize_center_crop(load_image(folder / "scene_0002.png"), ready.image_size)
    tokens, mask = ready.tokenizer.batch_encode(captions, ready.max_length)
    with torch.no_grad():
        scores = (ready.model.encode_text(tokens, mask) @ ready.model.encode_image(image[None])[0])
    best = scores.argsort(descending=True)[:3].tolist()
    assert [r["caption"] for r in results["results"]] == [captions[i] for i in best]
    assert results["captions"] == 12 and "caption" in format_results(results)


@pytest.mark.parametrize("overrides, error, words", [
    (["query=   "], ValueError, ["query", "non-empty"]),
    (["images=EMPTY", "query=a red circle"], ValueError, ["no PNG or JPEG"]),
    (["images=BROKEN", "query=a red circle"], ValueError, ["none of the 1 image files"]),
    (["images=MISSING", "query=a red circle"], FileNotFoundError, ["does not exist"]),
    (["query=a red circle", "image=x.png"], ValueError, ["exactly one of"]),
    ([], ValueError, ["exactly one of"]),
    (["image=IMAGE", "captions=EMPTY_TXT"], ValueError, ["holds no captions"]),
    (["query=a red circle", "k=0"], ValueError, ["k must be a positive int"]),
])
def test_bad_input_is_named(export, folder, tmp_path, overrides, error, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "empty.txt").write_text("\n  \n")
    places = {"EMPTY_TXT": tmp_path / "empty.txt", "EMPTY": tmp_path / "empty",
              "BROKEN": tmp_path / "broken", "MISSING": tmp_path / "missing",
              "IMAGE": folder / "scene_0000.png"}
    resolved = []
    for override in overrides:
        key, _, value = override.partition("=")
        resolved.append(f"{key}={places.get(value, value)}")
    if not any(o.startswith("images=") for o in resolved):
        resolved.append(f"images={folder}")
    with pytest.raises(error) as info:
        search(search_cfg(f"checkpoint={export}", *resolved), tmp_path / "run")
    assert all(word in str(info.value) for word in words), str(info.value)
