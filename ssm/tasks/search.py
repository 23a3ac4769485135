"""The task behind ``experiments/search.py``: text-to-image search over a folder of images
with a trained model, and the reverse (one image against a list of captions).

The folder's image features are cached beside it (``<folder>.search_index.pt``) per file,
keyed by size and modification time, and by the model: a new, changed or removed file
costs only itself on the next search; another model rebuilds the index. Files that do not
decode are skipped and counted (and remembered, until they change).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, ImageDraw, ImageFont

from ssm.data import SyntheticScenes
from ssm.data.transforms import BadImage, load_image, resize_center_crop
from ssm.tasks.export import ReadyModel, load_for_inference

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_VERSION = 1
TILE = 160          # contact-sheet thumbnail side, pixels
LABEL_HEIGHT = 34   # two lines of text under each thumbnail


@dataclass
class ImageIndex:
    """Features of a folder's readable images (rows in ``paths`` order)."""

    folder: Path
    paths: list[str]                    # relative to folder, sorted
    features: torch.Tensor              # (N, e), L2-normalised
    unreadable: list[str] = field(default_factory=list)
    from_cache: int = 0                 # how many features came from the cache


def search(cfg, run_dir) -> dict:
    """Text -> images (``query`` over ``images``) or image -> captions (``image`` against
    ``captions``); writes search_results.json (and contact_sheet.png for text -> images)
    into ``run_dir`` and returns the results."""
    if (cfg.query is None) == (cfg.image is None):
        raise ValueError("give exactly one of query=TEXT (with images=DIR) and image=PATH "
                         "(with captions=FILE)")
    if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or cfg.k < 1:
        raise ValueError(f"k must be a positive int, got {cfg.k!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.query is not None:
        results = _text_to_images(cfg, run_dir)
    else:
        results = _image_to_captions(cfg)
    (run_dir / "search_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _text_to_images(cfg, run_dir: Path) -> dict:
    query = str(cfg.query).strip()
    if not query:
        raise ValueError("query must be a non-empty text")
    if cfg.images is None:
        raise ValueError("query= needs images=DIR, the folder to search")
    folder = Path(cfg.images)
    ready = load_for_inference(cfg.checkpoint, cfg.device)
    cache = Path(cfg.index_cache) if cfg.index_cache else default_cache_path(folder)
    index = index_folder(ready, folder, cache, cfg.batch_size)
    text = _encode_texts(ready, [query], cfg.batch_size)                       # (1, e)
    scores = (index.features @ text[0]).tolist()                               # (N,)
    ranked = [{"rank": rank, "score": scores[i], "path": str(folder / index.paths[i])}
              for rank, i in _best(scores, cfg.k)]
    sheet = Path(cfg.sheet) if cfg.get("sheet") else run_dir / "contact_sheet.png"
    contact_sheet(ranked, query, sheet)
    return {"mode": "text_to_images", "query": query, "folder": str(folder),
            "images": len(index.paths), "unreadable": len(index.unreadable),
            "unreadable_files": index.unreadable, "from_cache": index.from_cache,
            "cache": str(cache), "results": ranked, "contact_sheet": str(sheet)}


def _image_to_captions(cfg) -> dict:
    if cfg.captions is None:
        raise ValueError("image= needs captions=FILE, a text file with one caption a line")
    captions_file = Path(cfg.captions)
    if not captions_file.is_file():
        raise FileNotFoundError(f"captions file {captions_file} does not exist")
    captions = [line.strip() for line in captions_file.read_text(encoding="utf-8").splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError(f"{captions_file} holds no captions (one per line, blank lines skipped)")
    ready = load_for_inference(cfg.checkpoint, cfg.device)
    try:
        pixels = resize_center_crop(load_image(cfg.image), ready.image_size)
    except BadImage as exc:
        raise ValueError(f"image {cfg.image} cannot be read: {exc}") from exc
    image = _encode_images(ready, [pixels])[0]                                 # (e,)
    scores = (_encode_texts(ready, captions, cfg.batch_size) @ image).tolist()
    ranked = [{"rank": rank, "score": scores[i], "caption": captions[i]}
              for rank, i in _best(scores, cfg.k)]
    return {"mode": "image_to_captions", "image": str(cfg.image), "captions": len(captions),
            "results": ranked}


def _best(scores: list[float], k: int) -> list[tuple[int, int]]:
    """(rank from 1, index) of the k highest scores, best first; ties keep file order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return [(rank, i) for rank, i in enumerate(order, start=1)]


def format_results(results: dict) -> str:
    """What experiments/search.py prints."""
    if results["mode"] == "text_to_images":
        head = [f"query: {results['query']!r}",
                f"{results['images']} images in {results['folder']} ({results['from_cache']} "
                f"from the cache), {results['unreadable']} unreadable skipped"]
        rows = [f"{r['rank']:>3}  {r['score']:+.4f}  {r['path']}" for r in results["results"]]
        tail = [f"contact sheet: {results['contact_sheet']}"]
    else:
        head = [f"image: {results['image']}", f"{results['captions']} captions"]
        rows = [f"{r['rank']:>3}  {r['score']:+.4f}  {r['caption']}" for r in results["results"]]
        tail = []
    return "\n".join(head + ["rank  score    " + ("path" if tail else "caption")] + rows + tail)


# -- the image index -------------------------------------------------------------------------

def default_cache_path(folder: Path) -> Path:
    """``<folder>.search_index.pt``, beside the folder (not inside: never one of its files)."""
    folder = Path(folder).resolve()
    return folder.parent / f"{folder.name}.search_index.pt"


def list_images(folder: Path) -> list[str]:
    """PNG and JPEG files under ``folder`` (any depth, any case of suffix), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def index_folder(ready: ReadyModel, folder: Path, cache: Optional[Path],
                 batch_size: int = 64) -> ImageIndex:
    """Features of every readable image in ``folder``, reusing ``cache`` where the model and
    a file's size and modification time are unchanged; the cache is rewritten after."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    names = list_images(folder)
    if not names:
        raise ValueError(f"{folder} holds no PNG or JPEG files")
    stats = {name: _stat(folder / name) for name in names}
    cached = _read_cache(cache, ready)
    entries = {name: cached[name] for name in names
               if name in cached and cached[name]["stat"] == stats[name]}
    todo = [name for name in names if name not in entries]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        pixels, readable = [], []
        for name in chunk:
            try:
                pixels.append(resize_center_crop(load_image(folder / name), ready.image_size))
                readable.append(name)
            except BadImage as exc:
                log.warning("skipping %s: %s", name, exc)
                entries[name] = {"stat": stats[name], "feature": None}
        if pixels:
            for name, feature in zip(readable, _encode_images(ready, pixels)):
                entries[name] = {"stat": stats[name], "feature": feature}
    if cache is not None and (todo or set(cached) != set(entries)):
        _write_cache(cache, ready, entries)
    good = [name for name in names if entries[name]["feature"] is not None]
    if not good:
        raise ValueError(f"none of the {len(names)} image files in {folder} could be read")
    return ImageIndex(folder, good, torch.stack([entries[n]["feature"] for n in good]),
                      [name for name in names if entries[name]["feature"] is None],
                      from_cache=len(set(good) - set(todo)))


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_cache(cache: Optional[Path], ready: ReadyModel) -> dict:
    """The cached entries if the cache was made by this model at this image size, else {}."""
    if cache is None or not cache.is_file():
        return {}
    try:
        data = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: rebuild rather than fail
        log.warning("ignoring the unreadable index cache %s: %s", cache, exc)
        return {}
    if (data.get("version"), data.get("fingerprint"), data.get("image_size")) != (
            CACHE_VERSION, ready.fingerprint, ready.image_size):
        log.info("index cache %s was made by another model; rebuilding it", cache)
        return {}
    return data["entries"]


def _write_cache(cache: Path, ready: ReadyModel, entries: dict) -> None:
    data = {"version": CACHE_VERSION, "fingerprint": ready.fingerprint,
            "image_size": ready.image_size, "entries": entries}
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, cache)  # atomic: a crash never leaves half an index
    except OSError as exc:
        log.warning("could not write the index cache %s (%s); the next search embeds the "
                    "folder again", cache, exc)


@torch.no_grad()
def _encode_images(ready: ReadyModel, pixels: list) -> torch.Tensor:
    """(3, S, S) images -> (b, e) L2-normalised features on the CPU."""
    device = next(ready.model.parameters()).device
    return ready.model.encode_image(torch.stack(pixels).to(device)).float().cpu()


@torch.no_grad()
def _encode_texts(ready: ReadyModel, texts: list[str], batch_size: int) -> torch.Tensor:
    """Texts -> (b, e) L2-normalised features on the CPU, ``batch_size`` at a time."""
    device = next(ready.model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        tokens, mask = ready.tokenizer.batch_encode(texts[start:start + batch_size],
                                                    ready.max_length)
        out.append(ready.model.encode_text(tokens.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)


# -- pictures --------------------------------------------------------------------------------

def contact_sheet(ranked: list[dict], title: str, path: Path, columns: int = 5) -> Path:
    """A PNG grid of the ranked images (best first), each with its rank, score and name."""
    columns = min(columns, len(ranked))
    rows = -(-len(ranked) // columns)
    header = 24
    sheet = Image.new("RGB", (columns * TILE, header + rows * (TILE + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((6, 6), title[:120], fill="black", font=font)
    for n, item in enumerate(ranked):
        x, y = (n % columns) * TILE, header + (n // columns) * (TILE + LABEL_HEIGHT)
        with Image.open(item["path"]) as image:
            thumb = image.convert("RGB")
        thumb.thumbnail((TILE - 8, TILE - 8))
        sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
        draw.text((x + 4, y + TILE), f"#{item['rank']}  {item['score']:+.3f}", fill="black",
                  font=font)
        draw.text((x + 4, y + TILE + 15), Path(item["path"]).name[:24], fill="dimgray",
                  font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_scenes(folder, n: int = 40, seed: int = 0, image_size: int = 128) -> Path:
    """A folder to try search on: ``n`` synthetic scenes as PNGs and their captions, one a
    line, in captions.txt (the same scenes and wording as the built-in training data)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = SyntheticScenes("val", n, seed=seed, image_size=image_size)
    captions = []
    for i in range(n):
        item = scenes[i]
        pixels = (item["image"].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"scene_{i:04d}.png")
        captions.append(item["caption"])
    (folder / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return folder
