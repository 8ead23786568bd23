import pytest
import torch
import torch.nn.functional as F

from metrics.swd import laplacian_pyramid, pyr_down, pyr_up, swd, swd_real_floor

KW = {"patches_per_image": 16, "repeats": 2, "dirs_per_repeat": 64}


def _images(n, seed=0, size=32):
    """Smooth random 'images' (n, 3, size, size) in [-1, 1]: upsampled low-res noise plus fine texture."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)
    return (low * 2 - 1) * 0.8 + 0.2 * (torch.rand(n, 3, size, size, generator=g) * 2 - 1)


def test_pyramid_shapes_and_reconstruction():
    x = _images(2)
    levels = laplacian_pyramid(x, min_size=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    rec = levels[-1]
    for band in reversed(levels[:-1]):
        rec = pyr_up(rec) + band
    assert torch.allclose(rec, x, atol=1e-5)
    assert pyr_down(x).shape == (2, 3, 16, 16)


def test_identical_sets_are_zero():
    x = _images(32)
    out = swd(x, x.clone(), **KW)
    assert set(out) == {"swd_32", "swd_16", "swd_mean"}
    assert out["swd_mean"] == pytest.approx(0.0, abs=1e-6)


def test_distorted_images_are_farther_than_real_floor():
    # Per-set normalisation (as in ProGAN) makes SWD blind to global affine colour changes, so distort texture.
    kw = {"patches_per_image": 64, "repeats": 2, "dirs_per_repeat": 64}
    real = _images(256, seed=1)
    floor = swd_real_floor(real, **kw)["swd_mean"]
    first, second = real[:128], real[128:]
    blurred = swd(first, F.avg_pool2d(F.pad(second, (1, 1, 1, 1), mode="reflect"), 3, 1), **kw)["swd_mean"]
    noise = swd(first, torch.rand_like(second) * 2 - 1, **kw)["swd_mean"]
    assert floor > 0
    assert blurred > 1.5 * floor and noise > 1.5 * floor


def test_deterministic_in_seed():
    a, b = _images(16, 2), _images(16, 3)
    assert swd(a, b, seed=5, **KW) == swd(a, b, seed=5, **KW)
    assert swd(a, b, seed=5, **KW) != swd(a, b, seed=6, **KW)


def test_rejects_mismatched_sets():
    with pytest.raises(ValueError):
        swd(_images(4), _images(5), **KW)
