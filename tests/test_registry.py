"""Registries: decorator registration, strict names, factories, and third-party plugins through entry points."""

import sys
import textwrap

import pytest

from core.errors import BenchError, UnknownNameError
from core.registry import DATASETS, EXPERIMENTS, MASKS, METHODS, Registry
from benchmark.runner import create_checked


def test_register_and_create():
    reg = Registry("widget")
    reg._loaded = True  # no built-ins for this private registry

    @reg.register("square")
    class Square:
        def __init__(self, side=1.0):
            self.side = side

    assert reg.names() == ["square"]
    assert reg.create("square", side=3.0).side == 3.0
    assert reg.create("square", side=None).side == 1.0  # None means "use the default"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("square")(type("Other", (), {}))


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        METHODS.get("nope")
    message = str(info.value)
    assert "unknown method 'nope'" in message
    for name in ("avg_depth", "const_depth", "ellipsoid"):
        assert name in message
    assert isinstance(info.value, BenchError)


def test_builtins_are_registered():
    assert {"const_depth", "avg_depth", "ellipsoid"} <= set(METHODS.names())
    assert {"synface_proc", "synface_bfm", "image_folder"} <= set(DATASETS.names())
    assert "shape_recon" in EXPERIMENTS.names()
    assert {"gt", "center", "grabcut", "file"} <= set(MASKS.names())


def test_unexpected_plugin_argument_is_a_clear_error():
    with pytest.raises(BenchError, match="does not take shape_prior .*ablation"):
        create_checked(METHODS, "const_depth", {"shape_prior": {"kind": "flat"}}, "ablation=flat_init")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party package declaring `gan2shape_bench.methods` is found without touching this repository."""
    (tmp_path / "thirdparty_plugin.py").write_text(textwrap.dedent("""
        from methods.baselines import ConstantDepth

        class FarPlane(ConstantDepth):
            def __init__(self):
                super().__init__(depth=1.05)
    """))
    dist = tmp_path / "thirdparty_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gan2shape_bench.methods]\nfar_plane = thirdparty_plugin:FarPlane\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method")  # a fresh registry of the same kind reads the same entry-point group
    assert "far_plane" in reg.names()
    assert reg.create("far_plane").depth == 1.05
    sys.modules.pop("thirdparty_plugin", None)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_composes_its_config_and_constructs(name):
    """timm's idea: one test over the whole registry. Every method has ``configs/method/<name>.yaml``; the composed
    config passes the config-only checks and builds the method (no weights or data are read before ``prepare``)."""
    from benchmark.config import compose
    from benchmark.runner import check_config, method_args, method_origin

    cfg = compose([f"method={name}"])
    assert cfg.method.name == name
    check_config(cfg)
    method = create_checked(METHODS, name, method_args(cfg), method_origin(cfg))
    assert isinstance(method, METHODS.get(name))
