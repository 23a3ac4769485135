"""File datasets (CSV, WebDataset tar shards), image transforms and bad-sample accounting.

Fixtures are real files written into tmp_path: PNG/JPEG through Pillow, shards through tarfile.
"""
import functools
import io
import logging
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssm.data import ByteTokenizer
from ssm.data.files import (BadSampleTracker, CsvImageText, TooManyBadSamples, WebDatasetImageText,
                            collate_image_text)
from ssm.data.transforms import BadImage, load_image, resize_center_crop

try:
    from ssm.data.scenes import SyntheticScenes
except ImportError:  # another module's; random colour blocks serve these tests as well
    SyntheticScenes = None

S = 16  # dataset output size; pictures are written larger, so every load resizes


# --- fixture files -------------------------------------------------------------------------

def picture(seed, height=24, width=24):
    """(height, width, 3) uint8, different for each seed (height, width multiples of 8).

    A rendered scene (cut to shape) when ssm.data.scenes exists; else random colours in 8x8
    blocks, which line up with JPEG's 8x8 DCT blocks and so survive JPEG almost exactly.
    """
    if SyntheticScenes is not None:
        scene = SyntheticScenes(size=100, image_size=max(height, width))[seed]["image"]
        return np.round(scene[:, :height, :width].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return blocks.repeat(8, axis=0).repeat(8, axis=1)


def encode(arr, fmt):
    buf = io.BytesIO()
    # subsampling=0: full-resolution colour, so JPEG error stays small and the checks tight.
    options = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(arr).save(buf, format=fmt, **options)
    return buf.getvalue()


def truncated_jpeg():
    """A JPEG whose header is whole but whose pixel data stops part way."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(noise, "JPEG")
    return data[: len(data) * 6 // 10]


def as_tensor(arr):
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def assert_shows(image, arr, candidates, lossy=False):
    """image (3, S, S) is picture arr, resized: close to it, and closer than to any candidate."""
    errors = [(image - resize_center_crop(as_tensor(other), S)).abs().mean() for other in candidates]
    error = (image - resize_center_crop(as_tensor(arr), S)).abs().mean()
    # Some scenes differ by little more than JPEG's error, hence the nearest-picture check.
    assert error < (0.02 if lossy else 1e-6) and all(error < other for other in errors)


def write_shard(path, members):
    """A tar of (name, bytes) members, in the given order, as WebDataset expects."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture
def csv_data(tmp_path):
    """data/pairs.csv with good rows (relative and absolute paths) then three bad ones."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    good = {"img/a.png": (picture(1), "a red cube"),
            "img/b.jpg": (picture(2), "zwei Würfel"),
            "img/wide.png": (picture(3, 24, 40), "a wide one")}
    rows = []
    for rel, (arr, caption) in good.items():
        (root / rel).write_bytes(encode(arr, "JPEG" if rel.endswith(".jpg") else "PNG"))
        # b.jpg is listed by absolute path, the others relative to the CSV's folder.
        rows.append((str(root / rel) if rel == "img/b.jpg" else rel, caption))
    (root / "img/garbage.png").write_bytes(os.urandom(200))
    (root / "img/cut.jpg").write_bytes(truncated_jpeg())
    rows += [("img/missing.png", "not there"), ("img/garbage.png", "garbage"), ("img/cut.jpg", "cut")]
    csv_path = root / "pairs.csv"
    csv_path.write_text("filepath\ttitle\n" + "".join(f"{p}\t{c}\n" for p, c in rows), encoding="utf-8")
    return csv_path, [(arr, caption) for arr, caption in good.values()]


def shard_members(first, n, bad=()):
    """n samples keyed first, first + 1, ..., captioned "caption KEY"; keys in ``bad`` are garbage."""
    members = []
    for key in range(first, first + n):
        image = os.urandom(100) if key in bad else encode(picture(key), "PNG")
        members += [(f"{key:06d}.png", image), (f"{key:06d}.txt", f"caption {key}\n".encode())]
    return members


@pytest.fixture
def shards(tmp_path):
    """Four shards of three samples each; sample 7 does not decode."""
    return [write_shard(tmp_path / f"shard-{i:06d}.tar", shard_members(3 * i, 3, bad={7}))
            for i in range(4)]


ALL_CAPTIONS = {f"caption {key}" for key in range(12) if key != 7}


def captions_seen(dataset, num_workers):
    """Every caption the dataset yields through a DataLoader, and the number of bad samples."""
    collate = functools.partial(collate_image_text, tokenizer=ByteTokenizer(), max_length=32)
    loader = DataLoader(dataset, batch_size=2, num_workers=num_workers, collate_fn=collate)
    captions, n_bad = [], 0
    for batch in loader:
        captions += batch["captions"]
        n_bad += batch["n_bad"]
    return captions, n_bad


# --- transforms ----------------------------------------------------------------------------

def test_load_image_png_is_exact_and_jpeg_close(tmp_path):
    arr = picture(5, 24, 40)
    (tmp_path / "x.png").write_bytes(encode(arr, "PNG"))
    image = load_image(tmp_path / "x.png")
    assert image.dtype == torch.float32 and image.shape == (3, 24, 40)
    torch.testing.assert_close(image, as_tensor(arr), rtol=0, atol=1e-6)
    torch.testing.assert_close(load_image(encode(arr, "PNG")), image, rtol=0, atol=0)
    jpeg = load_image(encode(arr, "JPEG"))
    assert (jpeg - as_tensor(arr)).abs().mean() < 0.02
    grey = load_image(encode(arr[..., 0], "PNG"))  # mode L comes out as three equal channels
    assert grey.shape == (3, 24, 40) and torch.equal(grey[0], grey[2])


def test_load_image_raises_bad_image_naming_the_file(tmp_path):
    garbage, cut = tmp_path / "garbage.png", tmp_path / "cut.jpg"
    garbage.write_bytes(os.urandom(200))
    cut.write_bytes(truncated_jpeg())
    with Image.open(cut) as header_only:
        assert header_only.size == (64, 64)  # the header reads; only decoding can notice
    for path in (tmp_path / "missing.png", garbage, cut):
        with pytest.raises(BadImage, match=str(path.name)):
            load_image(path)
    assert issubclass(BadImage, ValueError)
    with pytest.raises(BadImage, match="200 bytes"):
        load_image(garbage.read_bytes())


@pytest.mark.parametrize("shape", [(3, 40, 100), (3, 100, 40), (3, 5, 7), (3, 16, 16)])
def test_resize_center_crop_size_and_constant_colour(shape):
    colour = torch.tensor([0.2, 0.5, 0.9])[:, None, None]
    out = resize_center_crop(colour.expand(shape).clone(), S)
    assert out.shape == (3, S, S) and out.dtype == torch.float32
    torch.testing.assert_close(out, colour.expand(3, S, S), rtol=0, atol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_resize_center_crop_keeps_the_centre(transpose):
    image = torch.zeros(3, 41, 101)
    image[:, 18:23, 48:53] = 1.0  # a marker square at the centre
    image[:, :, :4] = image[:, :, -4:] = 0.5  # stripes at both ends of the long side
    if transpose:
        image = image.transpose(1, 2)
    size = 21
    out = resize_center_crop(image, size)
    assert out.shape == (3, size, size)
    weights = (out[0] - 0.25).clamp(min=0)  # the marker only
    axis = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    centre = (size - 1) / 2
    assert abs((weights * rows).sum() / weights.sum() - centre) <= 1.0
    assert abs((weights * cols).sum() / weights.sum() - centre) <= 1.0
    # Cropped, not squashed: the end stripes fall outside the centre square.
    assert out[:, [0, -1], :].max() < 0.05 and out[:, :, [0, -1]].max() < 0.05


def test_resize_center_crop_antialiases():
    stripes = torch.zeros(3, 48, 48)
    stripes[:, :, ::2] = 1.0
    # A 3x downscale of 1-pixel stripes: point-sampled bilinear would keep full-contrast stripes.
    out = resize_center_crop(stripes, 16)
    assert (out - 0.5).abs().max() < 0.2


def test_resize_center_crop_rejects_bad_args():
    with pytest.raises(ValueError, match="size"):
        resize_center_crop(torch.zeros(3, 8, 8), 0)
    with pytest.raises(ValueError, match="3, H, W"):
        resize_center_crop(torch.zeros(8, 8), 4)


# --- CSV -----------------------------------------------------------------------------------

def test_csv_loads_items_relative_to_its_folder(csv_data, tmp_path, monkeypatch):
    csv_path, good = csv_data
    monkeypatch.chdir(tmp_path)
    dataset = CsvImageText("data/pairs.csv", image_size=S)  # a relative CSV path, too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the image paths nor the CSV path may follow the cwd
    assert len(dataset) == 6
    pictures = [arr for arr, _ in good]
    for i, (arr, caption) in enumerate(good):
        item = dataset[i]
        assert item["caption"] == caption
        assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
        others = pictures[:i] + pictures[i + 1:]
        assert_shows(item["image"], arr, others, lossy=i == 1)  # row 1 is the JPEG


def test_csv_bad_images_are_none_and_counted(csv_data):
    csv_path, good = csv_data
    dataset = CsvImageText(csv_path, image_size=S)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item is None for item in items] == [False] * 3 + [True] * 3
    batch = collate_image_text(items, ByteTokenizer(), max_length=32)
    assert batch["images"].shape == (3, 3, S, S) and batch["n_bad"] == 3
    assert batch["captions"] == [caption for _, caption in good]
    n_good = batch["images"].shape[0]
    with pytest.raises(TooManyBadSamples, match="3 of 6"):
        BadSampleTracker(max_bad_fraction=0.4, min_seen=6).update(n_good, batch["n_bad"])
    BadSampleTracker(max_bad_fraction=0.5, min_seen=6).update(n_good, batch["n_bad"])


@pytest.mark.parametrize("header, missing",
                         [("filepath\tcaption", "title"), ("path\ttitle", "filepath")])
def test_csv_missing_column_names_it(tmp_path, header, missing):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"{header}\nimg/a.png\ta cube\n")
    with pytest.raises(ValueError, match=f"pairs.csv.*'{missing}'"):
        CsvImageText(csv_path)


def test_csv_structure_and_args_checked_at_construction(tmp_path, csv_data):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        CsvImageText(empty)
    short = tmp_path / "short.csv"
    short.write_text("filepath\ttitle\nimg/a.png\n")
    with pytest.raises(ValueError, match="short.csv line 2"):
        CsvImageText(short)
    with pytest.raises(ValueError, match="image_size"):
        CsvImageText(csv_data[0], image_size=0)
    comma = tmp_path / "comma.csv"
    comma.write_text("filepath,title\n" + str(tmp_path / "data/img/a.png") + ",a red cube\n")
    assert CsvImageText(comma, image_size=S, sep=",")[0]["caption"] == "a red cube"
    with pytest.raises(ValueError, match="caption_key"):
        CsvImageText(comma, sep=",", caption_key="")


def test_csv_caption_that_is_not_utf8_is_a_bad_sample_named_by_line(csv_data, caplog):
    csv_path, good = csv_data
    lines = csv_path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace("Würfel".encode(), b"W\xfcrfel")  # Latin-1, not UTF-8
    csv_path.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING, logger="ssm.data.files"):
        dataset = CsvImageText(csv_path, image_size=S)
    assert [r.getMessage() for r in caplog.records] == [
        f"{csv_path} line 3: caption is not valid UTF-8 (byte 0xfc at byte 6: invalid start "
        "byte); the sample is skipped and counted"]
    items = [dataset[i] for i in range(len(dataset))]
    assert [item is None for item in items] == [False, True, False, True, True, True]
    assert collate_image_text(items, ByteTokenizer(), max_length=32)["n_bad"] == 4


# --- WebDataset ----------------------------------------------------------------------------

def test_webdataset_yields_images_captions_and_none_for_bad_samples(tmp_path):
    members = [("000001.png", encode(picture(1), "PNG")), ("000001.txt", b"a red cube\n"),
               ("000002.jpg", encode(picture(2), "JPEG")), ("000002.txt", "zwei Würfel".encode()),
               ("000003.png", os.urandom(300)), ("000003.txt", b"garbage"),
               ("000004.txt", b"no image"),
               ("000005.png", encode(picture(5), "PNG")),  # no caption
               ("000006.jpeg", truncated_jpeg()), ("000006.txt", b"cut"),
               ("000007.jpeg", encode(picture(7), "JPEG")), ("000007.txt", b"last")]
    shard = write_shard(tmp_path / "shard.tar", members)
    items = list(WebDatasetImageText(shard, image_size=S))
    assert [item is None for item in items] == [False, False, True, True, True, True, False]
    good = [items[0], items[1], items[6]]
    assert [item["caption"] for item in good] == ["a red cube", "zwei Würfel", "last"]
    for item, key, lossy in zip(good, (1, 2, 7), (False, True, True)):
        assert item["image"].shape == (3, S, S)
        assert_shows(item["image"], picture(key), [picture(k) for k in (1, 2, 7) if k != key], lossy)


@pytest.mark.parametrize("world_size", [1, 2])
def test_webdataset_workers_and_ranks_see_every_sample_once(shards, world_size):
    captions, n_bad = [], 0
    for rank in range(world_size):
        dataset = WebDatasetImageText(shards, image_size=S, rank=rank, world_size=world_size)
        seen, bad = captions_seen(dataset, num_workers=2)
        if world_size > 1:
            assert seen and set(seen).isdisjoint(captions)
        captions, n_bad = captions + seen, n_bad + bad
    assert sorted(captions) == sorted(ALL_CAPTIONS) and n_bad == 1


def test_webdataset_ranks_from_environment(shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    from_env = WebDatasetImageText(shards, image_size=S)
    assert (from_env.rank, from_env.world_size) == (1, 2)
    explicit = WebDatasetImageText(shards, image_size=S, rank=1, world_size=2)
    assert [x and x["caption"] for x in from_env] == [x and x["caption"] for x in explicit]
    rank0 = WebDatasetImageText(shards, image_size=S, rank=0, world_size=2)
    assert set(rank0.shards_for()).isdisjoint(from_env.shards_for())


def test_webdataset_shuffle_is_a_seeded_permutation(shards):
    def order(seed, epoch=0):
        dataset = WebDatasetImageText(shards, image_size=S, shuffle_buffer=4, seed=seed)
        dataset.set_epoch(epoch)
        return [item["caption"] for item in dataset if item is not None]

    plain = [item["caption"] for item in WebDatasetImageText(shards, image_size=S) if item is not None]
    assert sorted(order(0)) == sorted(plain) and len(order(0)) == len(plain)
    assert order(0) == order(0)
    assert len({tuple(plain), tuple(order(0)), tuple(order(1)), tuple(order(0, epoch=1))}) == 4


def test_webdataset_shard_shuffle_keeps_ranks_disjoint(shards):
    orders = set()
    for seed, epoch in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        ranks = [WebDatasetImageText(shards, shuffle_buffer=4, seed=seed, rank=r, world_size=2)
                 for r in range(2)]
        for dataset in ranks:
            dataset.set_epoch(epoch)
        split = [dataset.shards_for() for dataset in ranks]
        assert sorted(split[0] + split[1]) == sorted(shards)  # every shard once, across ranks
        orders.add(tuple(split[0] + split[1]))
    assert len(orders) > 1  # the shard order changes with the seed and the epoch


def test_webdataset_brace_urls_and_bad_args(shards, tmp_path):
    pattern = str(tmp_path / "shard-{000000..000003}.tar")
    assert WebDatasetImageText(pattern).shards == shards
    with pytest.raises(ValueError, match="image_size"):
        WebDatasetImageText(shards, image_size=0)
    with pytest.raises(ValueError, match="rank"):
        WebDatasetImageText(shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match="together"):
        WebDatasetImageText(shards, rank=0)
    with pytest.raises(ValueError, match="4 shards"):
        WebDatasetImageText(shards, rank=0, world_size=5)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        WebDatasetImageText(shards, shuffle_buffer=-1)
    # A missing shard is a broken job, not a bad sample: named when the dataset is made.
    with pytest.raises(FileNotFoundError, match="no-such-shard.tar"):
        WebDatasetImageText(shards + [str(tmp_path / "no-such-shard.tar")])


# --- accounting ----------------------------------------------------------------------------

def test_tracker_raises_only_past_threshold_after_min_seen():
    tracker = BadSampleTracker(max_bad_fraction=0.1, min_seen=20)
    tracker.update(10, 5)  # a third bad, but too few seen to judge
    tracker.update(3, 0)
    assert (tracker.seen, tracker.bad) == (18, 5) and tracker.fraction == pytest.approx(5 / 18)
    with pytest.raises(TooManyBadSamples) as info:
        tracker.update(2, 0)
    assert isinstance(info.value, RuntimeError)
    for number in ("5 of 20", "25.00%", "10.00%"):
        assert number in str(info.value)

    at_limit = BadSampleTracker(max_bad_fraction=0.25, min_seen=4)
    at_limit.update(3, 1)  # exactly at the limit is allowed
    with pytest.raises(TooManyBadSamples, match="2 of 5"):
        at_limit.update(0, 1)
    assert BadSampleTracker().fraction == 0.0


@pytest.mark.parametrize("kwargs", [dict(max_bad_fraction=-0.1), dict(max_bad_fraction=1.5),
                                    dict(min_seen=-1)])
def test_tracker_rejects_bad_args(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BadSampleTracker(**kwargs)


def test_tracker_reports_skips_as_they_happen_when_the_count_doubles(caplog):
    tracker = BadSampleTracker(max_bad_fraction=0.5, min_seen=1000)
    with caplog.at_level(logging.WARNING, logger="ssm.data.files"):
        for _ in range(10):
            tracker.update(n_good=7, n_bad=1)
    counts = [int(r.getMessage().split(": ")[1].split(" ")[0]) for r in caplog.records]
    assert counts == [1, 2, 4, 8]  # 10 skips, 4 lines


def test_tracker_rejects_negative_counts():
    with pytest.raises(ValueError, match="n_bad"):
        BadSampleTracker().update(1, -1)


def test_collate_shapes_drops_none_and_counts():
    tokenizer = ByteTokenizer()
    images = [torch.rand(3, S, S) for _ in range(3)]
    items = [None, dict(image=images[0], caption="one"),
             dict(image=images[1], caption="a longer two"), None, dict(image=images[2], caption="3")]
    batch = collate_image_text(items, tokenizer, max_length=8)
    tokens, mask = tokenizer.batch_encode(["one", "a longer two", "3"], 8)
    assert batch["n_bad"] == 2 and batch["captions"] == ["one", "a longer two", "3"]
    assert torch.equal(batch["images"], torch.stack(images))
    assert torch.equal(batch["tokens"], tokens) and torch.equal(batch["mask"], mask)
    assert batch["tokens"].shape == batch["mask"].shape == (3, 8)
    assert batch["tokens"].dtype == torch.long and batch["mask"].dtype == torch.bool


def test_collate_all_none_gives_an_empty_batch():
    batch = collate_image_text([None, None, None], ByteTokenizer(), max_length=8)
    assert batch["n_bad"] == 3 and batch["captions"] == []
    assert batch["images"].shape[:2] == (0, 3)
    assert batch["tokens"].shape[0] == batch["mask"].shape[0] == 0


def test_training_passes_over_shards_each_shuffle_their_own_way(shards):
    """The trainer's endless batch stream tells the dataset each pass's number."""
    from ssm.tasks.train import repeat_passes

    dataset = WebDatasetImageText(shards, image_size=S, shuffle_buffer=4, seed=0)
    loader = DataLoader(dataset, batch_size=None, collate_fn=lambda item: item)
    stream = repeat_passes(loader)
    per_pass = len(ALL_CAPTIONS) + 1  # the bad sample comes through as None
    passes = [[x and x["caption"] for x in (next(stream) for _ in range(per_pass))]
              for _ in range(3)]
    assert all(sorted(filter(None, p)) == sorted(ALL_CAPTIONS) for p in passes)
    assert len({tuple(p) for p in passes}) == 3 and dataset.epoch == 2
