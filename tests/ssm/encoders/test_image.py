"""Image encoders: shapes, pooled vs per-patch features, gradients, batch independence, errors."""
import pytest
import torch
import torch.nn.functional as F

from ssm.encoders import ConvNetImageEncoder, ViTImageEncoder

# Small configurations keep the file fast; the defaults get one shape check of their own.
SMALL = {
    "vit": (lambda: ViTImageEncoder(image_size=32, patch_size=8, width=48, depth=2, heads=3), 48, 16),
    "cnn": (lambda: ConvNetImageEncoder(width=40, channels=(8, 16, 16), norm_groups=4), 40, 25),
}
IMAGE = {"vit": 32, "cnn": 36}  # 36 -> 18 -> 9 -> 5 exercises the odd-size rounding


def _make(kind, seed=0):
    torch.manual_seed(seed)
    return SMALL[kind][0]()


def _images(kind, b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, IMAGE[kind], IMAGE[kind], generator=g)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_shapes_and_dtypes(kind):
    model = _make(kind)
    _, width, p = SMALL[kind]
    x = _images(kind)
    pooled, patches = model.encode(x)
    assert model.width == width
    assert pooled.shape == (3, width) and pooled.dtype == torch.float32
    assert patches.shape == (3, p, width) and patches.dtype == torch.float32
    assert torch.isfinite(pooled).all() and torch.isfinite(patches).all()


def test_default_shapes():
    x = torch.randn(2, 3, 64, 64)
    vit = ViTImageEncoder()
    assert vit.width == 192
    assert vit(x).shape == (2, 192) and vit.forward_patches(x).shape == (2, 64, 192)
    cnn = ConvNetImageEncoder()
    assert cnn.width == 192
    assert cnn(x).shape == (2, 192) and cnn.forward_patches(x).shape == (2, 8 * 8, 192)
    # Any size from 16x16 up, including non-square.
    assert cnn.forward_patches(torch.randn(1, 3, 16, 24)).shape == (1, 2 * 3, 192)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_forward_and_forward_patches_match_encode(kind):
    model = _make(kind).eval()
    x = _images(kind)
    pooled, patches = model.encode(x)
    torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
    torch.testing.assert_close(model.forward_patches(x), patches, rtol=0, atol=0)


def test_cnn_pooled_is_normed_mean_of_patches():
    model = _make("cnn")
    x = _images("cnn")
    patches = model.forward_patches(x)
    expected = F.layer_norm(patches.mean(1), (model.width,), model.pool_norm.weight, model.pool_norm.bias)
    torch.testing.assert_close(model(x), expected)


def test_vit_outputs_are_final_norm_of_class_and_patch_tokens():
    model = _make("vit")
    with torch.no_grad():  # non-trivial affine so the check cannot pass by accident
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_()
    x = _images("vit")
    pooled, patches = model.encode(x)
    norm, model.norm = model.norm, torch.nn.Identity()
    raw_pooled, raw_patches = model.encode(x)
    torch.testing.assert_close(pooled, norm(raw_pooled))
    torch.testing.assert_close(patches, norm(raw_patches))
    # The class token is not one of the patches.
    assert not any(torch.allclose(pooled[0], patches[0, i]) for i in range(patches.shape[1]))


def test_vit_init():
    model = ViTImageEncoder()
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif "norm" in name:
            assert (p == 1).all(), name
        else:
            # Truncated normal, std 0.02, cut at +-2 (absolute).
            assert p.abs().max() <= 2.0 and abs(p.std().item() - 0.02) < 0.004, name


@pytest.mark.parametrize("kind", ["vit", "cnn"])
@pytest.mark.parametrize("output", ["pooled", "patches"])
def test_gradients_reach_every_parameter(kind, output):
    model = _make(kind).train()
    pooled, patches = model.encode(_images(kind))
    # A random projection: summing a LayerNorm output would give zero gradient to its input.
    target = pooled if output == "pooled" else patches
    g = torch.Generator().manual_seed(2)
    (target * torch.randn(target.shape, generator=g)).sum().backward()
    for name, p in model.named_parameters():
        if kind == "cnn" and output == "patches" and name.startswith("pool_norm"):
            assert p.grad is None, name  # the pooled-only norm must not touch the patches
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_no_cross_batch_leakage(kind):
    # In train mode, where BatchNorm would mix the batch.
    model = _make(kind).train()
    x = _images(kind, b=4)
    pooled, patches = model.encode(x)
    y = x.clone()
    y[2] = torch.randn_like(y[2]) * 3 + 1
    pooled_y, patches_y = model.encode(y)
    keep = [0, 1, 3]
    torch.testing.assert_close(pooled_y[keep], pooled[keep], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(patches_y[keep], patches[keep], rtol=1e-5, atol=1e-6)
    assert (pooled_y[2] - pooled[2]).abs().max() > 1e-2
    # A lone image gets the same features as it does inside a batch.
    torch.testing.assert_close(model.encode(x[1:2])[0], pooled[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_deterministic_under_seed(kind):
    x = _images(kind)
    a, b, c = _make(kind, seed=5), _make(kind, seed=5), _make(kind, seed=6)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a.forward_patches(x), b.forward_patches(x), rtol=0, atol=0)
    assert not torch.allclose(a(x), c(x))


def test_vit_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = ViTImageEncoder(image_size=16, patch_size=8, width=24, depth=1, heads=2, dropout=0.5)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


BAD = [
    # (id, kind, images, exception, words the message must contain)
    ("vit-3d", "vit", torch.randn(3, 32, 32), ValueError, ["images", "(b, 3, h, w)", "got 3 dimensions"]),
    ("vit-channels", "vit", torch.randn(1, 1, 32, 32), ValueError, ["3 channels", "got 1"]),
    ("vit-not-divisible", "vit", torch.randn(1, 3, 30, 32), ValueError, ["divisible", "patch_size"]),
    ("vit-wrong-size", "vit", torch.randn(1, 3, 40, 40), ValueError, ["image_size", "40x40"]),
    ("vit-int", "vit", torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, ["images", "floating"]),
    ("vit-list", "vit", [[1.0]], TypeError, ["images", "torch.Tensor"]),
    ("cnn-5d", "cnn", torch.randn(1, 1, 3, 32, 32), ValueError, ["images", "got 5 dimensions"]),
    ("cnn-channels", "cnn", torch.randn(1, 4, 32, 32), ValueError, ["3 channels", "got 4"]),
    ("cnn-small", "cnn", torch.randn(1, 3, 15, 32), ValueError, ["16x16", "15x32"]),
    ("cnn-int", "cnn", torch.zeros(1, 3, 32, 32, dtype=torch.long), TypeError, ["images", "floating"]),
]


@pytest.mark.parametrize("kind, images, exc, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.parametrize("method", ["forward", "forward_patches", "encode"])
def test_bad_images(kind, images, exc, words, method):
    model = _make(kind)
    with pytest.raises(exc) as info:
        getattr(model, method)(images)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("make, words", [
    (lambda: ViTImageEncoder(image_size=30, patch_size=8), ["image_size = 30", "patch_size = 8"]),
    (lambda: ViTImageEncoder(width=50, heads=3), ["width = 50", "heads = 3"]),
    (lambda: ConvNetImageEncoder(channels=(12, 16), norm_groups=8), ["channels", "norm_groups = 8"]),
    (lambda: ConvNetImageEncoder(channels=()), ["channels"]),
])
def test_bad_configuration(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_convnet_flatten_pooling_keeps_position():
    """Mean pooling cannot tell a shifted scene apart at all once the map is uniform;
    flatten pooling maps the same object at two places to different features."""
    torch.manual_seed(0)
    model = ConvNetImageEncoder(width=16, channels=(8, 16), pool="flatten", image_size=32)
    left = torch.zeros(1, 3, 32, 32)
    left[..., 8:14, 4:10] = 1.0
    right = torch.roll(left, shifts=16, dims=-1)
    with torch.no_grad():
        features = model(torch.cat([left, right]))
    assert features.shape == (2, 16)
    assert (features[0] - features[1]).abs().max() > 1e-3
    pooled, patches = model.encode(left)
    assert patches.shape == (1, 64, 16)
    with pytest.raises(ValueError, match="built for 32x32"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="needs image_size"):
        ConvNetImageEncoder(pool="flatten")
    with pytest.raises(ValueError, match="pool must be"):
        ConvNetImageEncoder(pool="max")
