"""Shared networks (methods/common/networks.py): parameter counts against method.md section 3, output shapes,
output ranges and the ResBlockDown in-place-ReLU quirk. Tiny forwards only (CPU, one thread)."""

import pytest
import torch
from torch import nn

from methods.common.networks import (
    ConfNet,
    EDDeconv,
    Encoder,
    ResBlockDown,
    ResEncoder,
    count_parameters,
    default_gn_base,
    default_nf,
    extra_levels,
)

torch.set_num_threads(1)

# (factory, S, exact count, spec's count in millions to 2 decimals)
COUNTS = [
    ("D", lambda s: EDDeconv(3, 1, s), 64, 12_979_648, 12.98),
    ("D", lambda s: EDDeconv(3, 1, s), 128, 12_947_680, 12.95),
    ("A", lambda s: EDDeconv(3, 3, s, activation=nn.Tanh), 64, 12_982_848, 12.98),
    ("A", lambda s: EDDeconv(3, 3, s, activation=nn.Tanh), 128, 12_949_280, 12.95),
    ("V", lambda s: Encoder(3, 6, s), 64, 6_952_960, 6.95),
    ("V", lambda s: Encoder(3, 6, s), 128, 6_984_192, 6.98),
    ("L", lambda s: Encoder(3, 4, s), 64, 6_951_936, 6.95),
    ("L", lambda s: Encoder(3, 4, s), 128, 6_983_168, 6.98),
    ("E", lambda s: ResEncoder(3, 512, s), 64, 3_565_504, 3.57),
    ("E", lambda s: ResEncoder(3, 512, s), 128, 13_789_632, 13.79),
]


@pytest.mark.parametrize("name,build,size,exact,spec_m", COUNTS, ids=[f"{c[0]}-{c[2]}" for c in COUNTS])
def test_parameter_counts_match_spec(name, build, size, exact, spec_m):
    n = count_parameters(build(size))
    assert round(n / 1e6, 2) == spec_m
    assert n == exact


def test_size_rules():
    assert (default_nf(64), default_nf(128), default_nf(512)) == (64, 32, 16)
    assert (default_gn_base(64), default_gn_base(128)) == (16, 8)
    assert (extra_levels(64), extra_levels(128)) == (0, 1)
    with pytest.raises(ValueError):
        extra_levels(96)


def test_no_conv_biases_except_shortcuts():
    for net in (EDDeconv(3, 1, 64), Encoder(3, 6, 128), ResEncoder(3, 512, 128), ConfNet()):
        biased = [k for k, _ in net.named_parameters()
                  if k.endswith(".bias") and not isinstance(net.get_submodule(k[:-5]), nn.GroupNorm)]
        assert all(".conv_sc." in k for k in biased), biased


def test_eddeconv_widths_and_groups_at_128():
    net = EDDeconv(3, 1, 128)
    convs = [m for m in net.network if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    down = [m.out_channels for m in convs if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    up = [m.out_channels for m in convs if isinstance(m, nn.ConvTranspose2d)]
    assert down == [32, 64, 128, 256, 512]
    assert up == [512, 256, 128, 64, 32]  # 1->4 to the bottleneck, then four x2 up-blocks
    assert [(m.num_groups, m.num_channels) for m in net.network if isinstance(m, nn.GroupNorm)][:4] == [
        (8, 32), (16, 64), (32, 128), (64, 256)]


@pytest.mark.parametrize("size", [64, 128])
def test_eddeconv_output_shape_and_tanh(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        depth = EDDeconv(3, 1, size)(x)
        albedo = EDDeconv(3, 3, size, activation=nn.Tanh)(x)
    assert depth.shape == (2, 1, size, size)
    assert albedo.shape == (2, 3, size, size)
    assert albedo.abs().max() <= 1


@pytest.mark.parametrize("size", [64, 128])
def test_encoder_shape_and_range(size):
    torch.manual_seed(0)
    with torch.no_grad():
        out = Encoder(3, 6, size)(10 * torch.randn(2, 3, size, size))
    assert out.shape == (2, 6)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("size", [64, 128])
def test_resencoder_shape(size):
    with torch.no_grad():
        out = ResEncoder(3, 512, size)(torch.randn(2, 3, size, size))
    assert out.shape == (2, 512)


def test_confnet_shapes_positive():
    with torch.no_grad():
        full, quarter = ConfNet()(torch.randn(2, 3, 64, 64))
    assert full.shape == (2, 2, 64, 64) and quarter.shape == (2, 2, 16, 16)
    assert (full > 0).all() and (quarter > 0).all()


def test_resblock_quirk_changes_output_only_for_negative_inputs():
    torch.manual_seed(0)
    quirk = ResBlockDown(8, 16, inplace_relu_quirk=True)
    plain = ResBlockDown(8, 16, inplace_relu_quirk=False)
    plain.load_state_dict(quirk.state_dict())
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(quirk(x), plain(x))
        assert torch.allclose(quirk(x.abs()), plain(x.abs()))
        # the quirk: the shortcut sees relu(x), exactly what the in-place original computed
        expected = quirk.conv_sc(nn.functional.avg_pool2d(x.clamp(min=0), 2)) + quirk.conv2(
            torch.relu(quirk.conv1(x.clamp(min=0))))
        assert torch.allclose(quirk(x), expected)
    assert x.min() < 0  # the input was not modified in place


def test_quirk_flag_reaches_every_block():
    net = ResEncoder(3, 512, 128, inplace_relu_quirk=False)
    assert [m.inplace_relu_quirk for m in net.modules() if isinstance(m, ResBlockDown)] == [False] * 4


def test_state_dict_layout_matches_originals():
    keys = list(ResEncoder(3, 512, 64).state_dict())
    assert keys[:5] == ["network.0.weight", "network.1.conv1.weight", "network.1.conv2.weight",
                        "network.1.conv_sc.weight", "network.1.conv_sc.bias"]
    assert {k.split(".")[0] for k in ConfNet().state_dict()} == {"network", "out_net1", "out_net2"}
    assert list(EDDeconv(3, 1, 64).state_dict())[:3] == ["network.0.weight", "network.1.weight", "network.1.bias"]


def test_shape_guard():
    with pytest.raises(ValueError):
        EDDeconv(3, 1, 64)(torch.zeros(2, 3, 128, 128))
    with pytest.raises(ValueError):
        Encoder(3, 6, 64)(torch.zeros(2, 1, 64, 64))
