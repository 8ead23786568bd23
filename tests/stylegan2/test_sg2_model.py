"""Generator / Discriminator: rosinality key parity (on the meta device), tiny-model behaviour, feature loss."""

import pytest
import torch

from methods.stylegan2.losses import discriminator_feature_loss, masked_feature_l1
from methods.stylegan2.model import Discriminator, Generator, stylegan2_channels

# method.md section 4: (size, channel multiplier) -> (state_dict keys, parameters in millions)
G_TABLE = {(64, 1): (99, 23.82), (64, 2): (99, 27.03), (128, 1): (117, 24.53), (128, 2): (117, 29.33),
           (256, 1): (135, 24.77), (256, 2): (135, 30.03), (512, 2): (153, 30.28)}
D_TABLE = {(64, 1): (36, 23.41), (64, 2): (None, 26.49), (128, 1): (43, 23.88), (128, 2): (None, 28.39),
           (256, 1): (50, 24.00), (256, 2): (None, 28.86), (512, 2): (57, 28.98)}


def ch(r, cm):
    return 512 if r <= 32 else {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}[r] * cm


def expected_generator_keys(size, cm):
    """The key -> shape table written out from method.md, independently of the model code."""
    L = size.bit_length() - 1
    keys = {"input.input": (1, 512, 4, 4)}
    for i in range(1, 9):
        keys.update({f"style.{i}.weight": (512, 512), f"style.{i}.bias": (512,)})
    keys.update({"conv1.conv.weight": (1, 512, 512, 3, 3), "conv1.conv.modulation.weight": (512, 512),
                 "conv1.conv.modulation.bias": (512,), "conv1.noise.weight": (1,), "conv1.activate.bias": (512,),
                 "to_rgb1.bias": (1, 3, 1, 1), "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
                 "to_rgb1.conv.modulation.weight": (512, 512), "to_rgb1.conv.modulation.bias": (512,)})
    for k in range(2 * (L - 2)):
        r = 2 ** (3 + k // 2)
        cin, cout = (ch(r // 2, cm), ch(r, cm)) if k % 2 == 0 else (ch(r, cm), ch(r, cm))
        p = f"convs.{k}."
        keys.update({p + "conv.weight": (1, cout, cin, 3, 3), p + "conv.modulation.weight": (cin, 512),
                     p + "conv.modulation.bias": (cin,), p + "noise.weight": (1,), p + "activate.bias": (cout,)})
        if k % 2 == 0:
            keys[p + "conv.blur.kernel"] = (4, 4)
    for j in range(L - 2):
        c, p = ch(2 ** (j + 3), cm), f"to_rgbs.{j}."
        keys.update({p + "bias": (1, 3, 1, 1), p + "upsample.kernel": (4, 4), p + "conv.weight": (1, 3, c, 1, 1),
                     p + "conv.modulation.weight": (c, 512), p + "conv.modulation.bias": (c,)})
    for i in range(2 * (L - 2) + 1):
        r = 2 ** ((i + 5) // 2)
        keys[f"noises.noise_{i}"] = (1, 1, r, r)
    return keys


def expected_discriminator_keys(size, cm):
    L = size.bit_length() - 1
    keys = {"convs.0.0.weight": (ch(size, cm), 3, 1, 1), "convs.0.1.bias": (ch(size, cm),)}
    for k in range(1, L - 1):
        cin, cout, p = ch(2 ** (L - k + 1), cm), ch(2 ** (L - k), cm), f"convs.{k}."
        keys.update({p + "conv1.0.weight": (cin, cin, 3, 3), p + "conv1.1.bias": (cin,), p + "conv2.0.kernel": (4, 4),
                     p + "conv2.1.weight": (cout, cin, 3, 3), p + "conv2.2.bias": (cout,),
                     p + "skip.0.kernel": (4, 4), p + "skip.1.weight": (cout, cin, 1, 1)})
    keys.update({"final_conv.0.weight": (512, 513, 3, 3), "final_conv.1.bias": (512,),
                 "final_linear.0.weight": (512, 8192), "final_linear.0.bias": (512,),
                 "final_linear.1.weight": (1, 512), "final_linear.1.bias": (1,)})
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def millions(module):
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


@pytest.mark.parametrize("size,cm", sorted(G_TABLE))
def test_generator_keys_and_parameters_match_rosinality(size, cm):
    with torch.device("meta"):
        g = Generator(size, 512, 8, channel_multiplier=cm)
    n_keys, params = G_TABLE[(size, cm)]
    assert len(g.state_dict()) == n_keys
    assert millions(g) == pytest.approx(params, abs=0.006)
    assert shapes(g) == expected_generator_keys(size, cm)


@pytest.mark.parametrize("size,cm", sorted(D_TABLE))
def test_discriminator_keys_and_parameters_match_rosinality(size, cm):
    with torch.device("meta"):
        d = Discriminator(size, channel_multiplier=cm)
    n_keys, params = D_TABLE[(size, cm)]
    assert n_keys is None or len(d.state_dict()) == n_keys
    assert millions(d) == pytest.approx(params, abs=0.006)
    assert shapes(d) == expected_discriminator_keys(size, cm)


def test_rosinality_key_order_prefix():
    with torch.device("meta"):
        keys = list(Generator(64, channel_multiplier=1).state_dict())
    assert keys[:2] == ["style.1.weight", "style.1.bias"] and keys[-1] == "noises.noise_8"


def test_small_channel_configs():
    assert stylegan2_channels(32, max_channels=16) == {4: 16, 8: 16, 16: 16, 32: 16}
    g = Generator(16, style_dim=8, n_mlp=2, channels={4: 12, 8: 10, 16: 6})
    assert g.convs[0].conv.weight.shape == (1, 10, 12, 3, 3) and g.to_rgbs[-1].conv.weight.shape == (1, 3, 6, 1, 1)
    with pytest.raises(ValueError, match="missing"):
        Generator(16, channels={4: 8, 8: 8})
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(24)


@pytest.fixture(scope="module")
def tiny_g():
    torch.manual_seed(0)
    return Generator(16, style_dim=16, n_mlp=3, max_channels=16).eval()


def test_generator_shapes_and_w_plus(tiny_g):
    z = torch.randn(2, 16)
    img, latents = tiny_g([z], return_latents=True)
    assert img.shape == (2, 3, 16, 16) and latents.shape == (2, tiny_g.n_latent, 16)
    w = tiny_g.get_latent(z)
    img_w, _ = tiny_g([w], input_is_w=True)
    img_wplus, _ = tiny_g(w[:, None].repeat(1, tiny_g.n_latent, 1), input_is_w=True)
    torch.testing.assert_close(img_w, img)
    torch.testing.assert_close(img_wplus, img)
    with pytest.raises(ValueError):
        tiny_g(torch.randn(2, 3, 16))  # W+ without input_is_w


def test_truncation(tiny_g):
    z, mean = torch.randn(2, 16), tiny_g.mean_latent(64, generator=torch.Generator().manual_seed(1))
    assert mean.shape == (1, 16)
    torch.testing.assert_close(tiny_g([z], truncation=1.0, truncation_latent=mean)[0], tiny_g([z])[0])
    at_mean = tiny_g([z], truncation=0.0, truncation_latent=mean)[0]
    torch.testing.assert_close(at_mean, tiny_g([mean.expand(2, 16)], input_is_w=True)[0])
    with pytest.raises(ValueError, match="truncation_latent"):
        tiny_g([z], truncation=0.5)


def test_noise_modes(tiny_g):
    z = torch.randn(1, 16)
    with torch.no_grad():
        for conv in tiny_g.convs:
            conv.noise.weight.fill_(0.5)
        tiny_g.conv1.noise.weight.fill_(0.5)
    a, b = tiny_g([z])[0], tiny_g([z])[0]
    torch.testing.assert_close(a, b)  # stored buffers by default
    torch.testing.assert_close(tiny_g([z], noise=tiny_g.stored_noise())[0], a)
    assert not torch.allclose(tiny_g([z], randomize_noise=True)[0], a)
    zero = [torch.zeros_like(n) for n in tiny_g.stored_noise()]
    assert not torch.allclose(tiny_g([z], noise=zero)[0], a)


def test_style_forward_partial_mapping(tiny_g):
    z = torch.randn(3, 16)
    full = tiny_g.get_latent(z)
    torch.testing.assert_close(tiny_g.style_forward(z), full)
    torch.testing.assert_close(tiny_g.style_forward(z, skip=0, depth=len(tiny_g.style)), full)
    for k in range(len(tiny_g.style) + 1):
        torch.testing.assert_close(tiny_g.style_forward(tiny_g.style_forward(z, 0, k), skip=k), full)
    torch.testing.assert_close(tiny_g.style_forward(torch.zeros(1, 16), 0, 1), torch.zeros(1, 16))  # PixelNorm(0)=0
    with pytest.raises(ValueError):
        tiny_g.style_forward(z, skip=2, depth=1)


def test_standard_style_forward_has_nine_entries():
    with torch.device("meta"):
        g = Generator(64, channel_multiplier=1)
    assert len(g.style) == 9 and type(g.style[0]).__name__ == "PixelNorm"


@pytest.fixture(scope="module")
def tiny_d():
    torch.manual_seed(0)
    return Discriminator(64, max_channels=8).eval()


def test_discriminator_logits_and_features(tiny_d):
    x = torch.randn(4, 3, 64, 64)
    assert tiny_d(x).shape == (4, 1)
    feats = tiny_d(x, ftr_num=4)
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    torch.testing.assert_close(feats[0], tiny_d.convs[1](tiny_d.convs[0](x)))
    # GAN2Shape feeds S-resolution images (S < gan_size) to the feature path: S/2 .. S/16
    small = tiny_d(torch.randn(2, 3, 32, 32), ftr_num=4)
    assert [tuple(f.shape[-2:]) for f in small] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ValueError, match="ftr_num"):
        tiny_d(x, ftr_num=5)
    with pytest.raises(ValueError, match="logits need"):
        tiny_d(torch.randn(2, 3, 32, 32))


def test_minibatch_stddev_groups():
    torch.manual_seed(0)
    d = Discriminator(16, max_channels=8, stddev_group=2)
    x = torch.randn(4, 8, 4, 4)
    y = d.minibatch_stddev(x)
    ref = torch.sqrt(x.view(2, 2, 8, 4, 4).var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # per group member
    torch.testing.assert_close(y[:, 8, 0, 0], ref.repeat(2))
    with pytest.raises(ValueError, match="divisible"):
        d(torch.randn(3, 3, 16, 16))


def test_feature_loss_zero_for_identical_and_mask_weighted(tiny_d):
    torch.manual_seed(1)
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32, requires_grad=True)
    assert float(discriminator_feature_loss(tiny_d, real, real, torch.ones(2, 1, 32, 32)).detach()) == 0.0
    assert float(discriminator_feature_loss(tiny_d, fake, real, torch.zeros(2, 32, 32)).detach()) == 0.0
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :, :16] = 1.0  # left half valid
    loss = discriminator_feature_loss(tiny_d, fake, real, mask)
    with torch.no_grad():
        f, r = tiny_d(fake, ftr_num=4), tiny_d(real, ftr_num=4)
        manual = sum(((a - b).abs() * torch.nn.functional.avg_pool2d(mask, 32 // a.shape[-1])).mean()
                     for a, b in zip(f, r))
    torch.testing.assert_close(loss.detach(), manual)
    unmasked = masked_feature_l1(f, r)
    assert 0 < float(loss.detach()) < float(unmasked)
    loss.backward()
    assert fake.grad is not None and fake.grad[..., 24:].abs().sum() < fake.grad[..., :8].abs().sum()
