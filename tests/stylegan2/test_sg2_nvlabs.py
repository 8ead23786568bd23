"""NVlabs stylegan2-ada-pytorch pickles through the restricted unpickler, with a synthetic pickle of the same layout.

The pickling side uses a throw-away fake ``torch_utils`` / ``dnnlib`` package tree written to a temp dir, and small
network classes (below) whose ``__reduce__`` mimics ``torch_utils.persistence``: a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src,
class_name, state}``. Their ``forward`` methods follow NVlabs' semantics (generic up/down-sampling path, non-fused
modulation) and serve as the reference. Before loading, the fake packages are dropped from ``sys.modules`` and
replaced on disk by modules that record any import; the embedded ``module_src`` records any execution.
"""

import importlib
import math
import os
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import BenchError
from methods.stylegan2.checkpoints import convert_checkpoint, load_discriminator, load_generator, read_checkpoint
from methods.stylegan2.nvlabs import PersistentRecord, load_network_pickle

RES, W_DIM, N_MAP, LR_MAP = 16, 16, 2, 0.05
CHANNELS = {4: 16, 8: 12, 16: 8}
FILTER = torch.tensor([1.0, 3, 3, 1])
FILTER2D = FILTER[:, None] * FILTER[None, :] / FILTER.sum() ** 2


def fir(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Naive upfirdn (zero insertion, pad, tap-by-tap true convolution, decimation), written independently."""
    b, c, h, w = x.shape
    z = torch.zeros(b, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, pad)
    f = f * gain
    kh, kw = f.shape
    oh, ow = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = sum(f[kh - 1 - i, kw - 1 - j] * z[:, :, i : i + oh, j : j + ow] for i in range(kh) for j in range(kw))
    return out[:, :, ::down, ::down]


def lrelu(x):
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


class Persistent(torch.nn.Module):
    """Pickles like a torch_utils.persistence object (meta record with the module source and the state)."""

    MODULE_SRC = "import os\nopen(os.environ['SG2_EXEC_FLAG'], 'w').write('executed')\n"

    def __init__(self, **kwargs):
        super().__init__()
        self._init_args, self._init_kwargs = (), kwargs

    def __reduce__(self):
        from torch_utils import persistence  # the fake package, importable only while pickling

        meta = dict(type="class", version=6, module_src=self.MODULE_SRC, class_name=type(self).__name__,
                    state=dict(self.__dict__))
        return persistence._reconstruct_persistent_obj, (meta,)


def param(*shape, scale=1.0, offset=0.0):
    return torch.nn.Parameter(torch.randn(shape) * scale + offset)


class FullyConnectedLayer(Persistent):
    def __init__(self, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__(in_features=in_features, out_features=out_features, activation=activation,
                         lr_multiplier=lr_multiplier, bias_init=bias_init)
        self.activation = activation
        self.weight = param(out_features, in_features, scale=1 / lr_multiplier)
        self.bias = param(out_features, scale=0.1, offset=bias_init)
        self.weight_gain = np.float64(lr_multiplier / np.sqrt(in_features))  # numpy scalar, as in NVlabs
        self.bias_gain = lr_multiplier

    def forward(self, x):
        x = x @ (self.weight * float(self.weight_gain)).t() + self.bias * self.bias_gain
        return lrelu(x) if self.activation == "lrelu" else x


class MappingNetwork(Persistent):
    def __init__(self, num_layers, lr_multiplier):
        super().__init__(z_dim=W_DIM, c_dim=0, w_dim=W_DIM, num_layers=num_layers, lr_multiplier=lr_multiplier)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(W_DIM, W_DIM, "lrelu", lr_multiplier))
        self.register_buffer("w_avg", torch.randn(W_DIM))

    def forward(self, z):
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(N_MAP):
            x = getattr(self, f"fc{i}")(x)
        return x


class SynthesisLayer(Persistent):
    def __init__(self, cin, cout, resolution, up=1):
        super().__init__(in_channels=cin, out_channels=cout, w_dim=W_DIM, resolution=resolution, up=up)
        self.up = up
        self.register_buffer("resample_filter", FILTER2D.clone())
        self.affine = FullyConnectedLayer(W_DIM, cin, bias_init=1.0)
        self.weight = param(cout, cin, 3, 3)
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = param(scale=0.3)
        self.bias = param(cout, scale=0.1)

    def forward(self, x, w):
        styles = self.affine(w)
        dcoefs = ((self.weight[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt()
        x = x * styles[:, :, None, None]
        if self.up == 2:  # generic path: upsample + filter (pad 3, 2), then a true convolution
            x = F.conv2d(fir(x, self.resample_filter, up=2, pad=(3, 2, 3, 2), gain=4), self.weight.flip([2, 3]))
        else:
            x = F.conv2d(x, self.weight, padding=1)
        x = x * dcoefs[:, :, None, None] + self.noise_const * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None])


class ToRGBLayer(Persistent):
    def __init__(self, cin):
        super().__init__(in_channels=cin, out_channels=3, w_dim=W_DIM)
        self.affine = FullyConnectedLayer(W_DIM, cin, bias_init=1.0)
        self.weight = param(3, cin, 1, 1)
        self.bias = param(3, scale=0.1)
        self.weight_gain = np.float64(1 / np.sqrt(cin))

    def forward(self, x, w):
        styles = self.affine(w) * float(self.weight_gain)
        return F.conv2d(x * styles[:, :, None, None], self.weight) + self.bias[None, :, None, None]


class SynthesisBlock(Persistent):
    def __init__(self, cin, cout, resolution):
        super().__init__(in_channels=cin, out_channels=cout, w_dim=W_DIM, resolution=resolution, img_channels=3,
                         is_last=resolution == RES, architecture="skip")
        self.register_buffer("resample_filter", FILTER2D.clone())
        if cin == 0:
            self.const = param(cout, resolution, resolution)
        else:
            self.conv0 = SynthesisLayer(cin, cout, resolution, up=2)
        self.conv1 = SynthesisLayer(cout, cout, resolution)
        self.torgb = ToRGBLayer(cout)


class SynthesisNetwork(Persistent):
    def __init__(self):
        super().__init__(w_dim=W_DIM, img_resolution=RES, img_channels=3)
        for r in CHANNELS:
            setattr(self, f"b{r}", SynthesisBlock(CHANNELS.get(r // 2, 0), CHANNELS[r], r))

    def forward(self, ws):
        x = img = None
        for k, r in enumerate(CHANNELS):
            block = getattr(self, f"b{r}")
            if r == 4:
                x = block.conv1(block.const[None].repeat(ws.shape[0], 1, 1, 1), ws[:, 0])
            else:
                x = block.conv1(block.conv0(x, ws[:, 2 * k - 1]), ws[:, 2 * k])
                img = fir(img, block.resample_filter, up=2, pad=(2, 1, 2, 1), gain=4)
            y = block.torgb(x, ws[:, 2 * k + 1])
            img = y if img is None else img + y
        return img


class Generator(Persistent):
    def __init__(self):
        from dnnlib.util import EasyDict

        super().__init__(z_dim=W_DIM, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=3,
                         mapping_kwargs=EasyDict(num_layers=N_MAP, lr_multiplier=LR_MAP), synthesis_kwargs=EasyDict())
        self.synthesis = SynthesisNetwork()
        self.mapping = MappingNetwork(N_MAP, LR_MAP)

    def forward(self, z):
        return self.synthesis(self.mapping(z)[:, None].repeat(1, 2 * int(math.log2(RES)) - 2, 1))


class Conv2dLayer(Persistent):
    def __init__(self, cin, cout, k, bias=True, activation="linear", down=1):
        super().__init__(in_channels=cin, out_channels=cout, kernel_size=k, bias=bias, activation=activation,
                         down=down)
        self.activation, self.down, self.k = activation, down, k
        self.register_buffer("resample_filter", FILTER2D.clone())
        self.weight = param(cout, cin, k, k)
        self.bias = param(cout, scale=0.1) if bias else None
        self.weight_gain = np.float64(1 / np.sqrt(cin * k * k))

    def forward(self, x, gain=1.0):
        w = self.weight * float(self.weight_gain)
        if self.down == 2:  # generic path: zero pad, valid correlation, then filter + decimate
            p = self.k // 2 + 1
            x = fir(F.conv2d(F.pad(x, (p, p, p, p)), w), self.resample_filter, down=2)
        else:
            x = F.conv2d(x, w, padding=self.k // 2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return (lrelu(x) if self.activation == "lrelu" else x) * gain


class DiscriminatorBlock(Persistent):
    def __init__(self, cin, tmp, cout, resolution):
        super().__init__(in_channels=cin, tmp_channels=tmp, out_channels=cout, resolution=resolution, img_channels=3,
                         architecture="resnet")
        self.register_buffer("resample_filter", FILTER2D.clone())
        if cin == 0:
            self.fromrgb = Conv2dLayer(3, tmp, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp, tmp, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp, cout, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp, cout, 1, bias=False, down=2)

    def forward(self, x, img):
        if img is not None:
            x = self.fromrgb(img)
        return self.skip(x, math.sqrt(0.5)) + self.conv1(self.conv0(x), math.sqrt(0.5))


class MinibatchStdLayer(Persistent):
    def __init__(self, group_size, num_channels=1):
        super().__init__(group_size=group_size, num_channels=num_channels)
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g, f = min(self.group_size, n), self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=[2, 3, 4])
        return torch.cat([x, y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)], dim=1)


class DiscriminatorEpilogue(Persistent):
    def __init__(self, cin):
        super().__init__(in_channels=cin, cmap_dim=0, resolution=4, img_channels=3, mbstd_group_size=2)
        self.mbstd = MinibatchStdLayer(2, 1)
        self.conv = Conv2dLayer(cin + 1, cin, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(cin * 16, cin, activation="lrelu")
        self.out = FullyConnectedLayer(cin, 1)

    def forward(self, x):
        return self.out(self.fc(self.conv(self.mbstd(x)).flatten(1)))


class Discriminator(Persistent):
    def __init__(self):
        super().__init__(c_dim=0, img_resolution=RES, img_channels=3)
        for r in (16, 8):
            setattr(self, f"b{r}", DiscriminatorBlock(0 if r == RES else CHANNELS[r], CHANNELS[r], CHANNELS[r // 2], r))
        self.b4 = DiscriminatorEpilogue(CHANNELS[4])

    def forward(self, img, ftr_num=None):
        x = self.b16(None, img)
        feats = [x, self.b8(x, None)]
        return feats[:ftr_num] if ftr_num else self.b4(feats[-1])


FAKE_SRC = {
    "torch_utils/__init__.py": "",
    "torch_utils/persistence.py": "def _reconstruct_persistent_obj(meta):\n    raise RuntimeError('fake')\n",
    "dnnlib/__init__.py": "from .util import EasyDict\n",
    "dnnlib/util.py": "class EasyDict(dict):\n    pass\n",
}
POISON = "import os\nopen(os.path.join(os.environ['SG2_IMPORT_DIR'], __name__), 'w').write('imported')\n"


def write_tree(root, files):
    for rel, src in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(src))


def drop_fake_modules():
    for name in list(sys.modules):
        if name.split(".")[0] in ("torch_utils", "dnnlib"):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def nv(tmp_path_factory):
    """Pickle fake NVlabs networks, then poison the fake packages; yields paths, reference nets and flag paths."""
    root = tmp_path_factory.mktemp("nv")
    pkgs, flags = root / "pkgs", root / "flags"
    flags.mkdir()
    write_tree(pkgs, FAKE_SRC)
    drop_fake_modules()
    sys.path.insert(0, str(pkgs))
    try:
        from dnnlib.util import EasyDict

        torch.manual_seed(0)
        g_ema, d = Generator().eval(), Discriminator().eval()
        data = {"G": Generator(), "D": d, "G_ema": g_ema, "augment_pipe": None,
                "training_set_kwargs": EasyDict(resolution=RES, xflip=False)}
        full, no_d = root / "network-snapshot.pkl", root / "g_only.pkl"
        full.write_bytes(pickle.dumps(data))
        no_d.write_bytes(pickle.dumps({"G_ema": g_ema}))
        drop_fake_modules()
        write_tree(pkgs, {rel: POISON for rel in FAKE_SRC})  # any import from now on leaves a flag file
        os.environ["SG2_IMPORT_DIR"] = str(flags)
        os.environ["SG2_EXEC_FLAG"] = str(flags / "module_src_executed")
        yield {"pkl": full, "no_d": no_d, "g": g_ema, "d": d, "flags": flags, "root": root}
    finally:
        sys.path.remove(str(pkgs))
        drop_fake_modules()
        os.environ.pop("SG2_IMPORT_DIR", None)
        os.environ.pop("SG2_EXEC_FLAG", None)


def assert_nothing_imported_or_executed(nv):
    assert not any(name.split(".")[0] in ("torch_utils", "dnnlib") for name in sys.modules)
    assert list(nv["flags"].iterdir()) == []


def test_restricted_unpickler_builds_inert_records(nv):
    data = load_network_pickle(nv["pkl"])
    assert_nothing_imported_or_executed(nv)
    g = data["G_ema"]
    assert isinstance(g, PersistentRecord) and g.class_name == "Generator"
    assert g.init_kwargs["mapping_kwargs"] == {"num_layers": N_MAP, "lr_multiplier": LR_MAP}
    assert data["training_set_kwargs"] == {"resolution": RES, "xflip": False}
    fc0 = g.child("mapping").child("fc0")
    assert fc0.state["bias_gain"] == LR_MAP and isinstance(fc0.state["weight_gain"], float)
    tensors = g.tensors()
    assert tensors["synthesis.b4.const"].shape == (CHANNELS[4], 4, 4) and tensors["mapping.w_avg"].shape == (W_DIM,)
    torch.testing.assert_close(tensors["synthesis.b8.conv0.weight"], nv["g"].synthesis.b8.conv0.weight.detach())


def test_converted_networks_match_reference(nv):
    ckpt = read_checkpoint(nv["pkl"])
    assert_nothing_imported_or_executed(nv)
    assert ckpt.source_format == "nvlabs-pkl"
    assert ckpt.g_config["size"] == RES and ckpt.g_config["n_mlp"] == N_MAP and ckpt.g_config["lr_mlp"] == LR_MAP
    assert ckpt.d_config["stddev_group"] == 2 and ckpt.d_config["channels"] == {str(r): c for r, c in CHANNELS.items()}
    torch.testing.assert_close(ckpt.latent_avg, nv["g"].mapping.w_avg)
    g, d = load_generator(nv["pkl"]), load_discriminator(nv["pkl"])
    z, img = torch.randn(3, W_DIM), torch.randn(4, 3, RES, RES)
    with torch.no_grad():
        torch.testing.assert_close(g([z])[0], nv["g"](z), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d(img), nv["d"](img), atol=1e-5, rtol=1e-4)
        for ours, ref in zip(d(img, ftr_num=2), nv["d"](img, ftr_num=2)):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_convert_pkl_round_trip(nv, tmp_path):
    out = convert_checkpoint(nv["pkl"], tmp_path / "nv.safetensors")
    assert read_checkpoint(out).g_config["lr_mlp"] == LR_MAP
    z = torch.randn(2, W_DIM)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(out)([z])[0], load_generator(nv["pkl"])([z])[0], rtol=0, atol=0)
    assert load_discriminator(out).stddev_group == 2
    assert_nothing_imported_or_executed(nv)


def test_pickle_without_discriminator(nv):
    assert read_checkpoint(nv["no_d"]).d is None
    with pytest.raises(BenchError, match="no discriminator"):
        load_discriminator(nv["no_d"])


class Evil:
    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


@pytest.mark.parametrize("payload,match", [
    (lambda: pickle.dumps({"G_ema": Evil()}), r"refused to load '(posix|nt|os)\.system'"),
    (lambda: pickle.dumps({"G_ema": eval}), r"refused to load 'builtins\.eval'"),
    (lambda: b"cdnnlib.tflib.network\nNetwork\n)R.", "legacy.py"),
    (lambda: pickle.dumps({"G": 1}), "no 'G_ema' network"),
    (lambda: b"\x80\x04garbage", "cannot read the pickle"),
])
def test_refused_pickles(tmp_path, payload, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload())
    with pytest.raises(BenchError, match=match):
        load_generator(path)
