"""The per-run HTML result page: file references, escaping, the shipped viewer, and a real render in Chromium.

The browser test drives headless Chromium (``/usr/bin/chromium``, Debian package ``chromium``) through the
DevTools protocol over a pipe (``--remote-debugging-pipe``, NUL-separated JSON on fds 3/4: standard library only),
opens the page from ``file://``, waits for ``<model-viewer>`` to report ``data-status="loaded"``, then screenshots
the viewer and checks that the model's red and green texture halves are drawn, with shading, over the background.
WebGL runs on SwiftShader (CPU), so no GPU is needed.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from base64 import b64decode
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from core.result_page import VIEWER_SCRIPT, Image, Model, PageSection, Table, write_result_page
from methods.renderer.camera import intrinsics
from methods.renderer.mesh import export_mesh

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian package `chromium`
TITLE = 'Run <script>alert("x")</script> & co'


def _bump_glb(path: Path, n: int = 16) -> None:
    """A 16x16 depth map with a bump, textured red on the left half and green on the right half."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    depth = 1.0 - 0.05 * torch.exp(-2 * (x**2 + y**2))
    left = (x < 0).float()
    texture = torch.stack([2 * left - 1, 1 - 2 * left, -torch.ones(n, n)])  # red | green, in [-1, 1]
    export_mesh(path, depth, texture, intrinsics(n))


def _write_page(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    _bump_glb(out_dir / "meshes" / "bump #1.glb")
    PILImage.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))).save(out_dir / "depth.png")
    sections = [
        PageSection("Shape", [Model("meshes/bump #1.glb", caption="bump <mesh>")]),
        PageSection("Maps & metrics", [
            Image(out_dir / "depth.png", caption="depth & <normals>", wide=True),
            Table({"side<x>": 0.123456, "n_images": 3}, caption="metrics"),
        ]),
    ]
    return write_result_page(out_dir, TITLE, sections, meta={"method": "ellipsoid", "note": "a<b"})


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_references_escaping_and_glb(tmp_path, monkeypatch):
    import trimesh

    monkeypatch.chdir(tempfile.gettempdir())  # nothing may depend on the working directory
    page = _write_page(tmp_path / "run")
    out_dir = page.parent
    text = page.read_text(encoding="utf-8")

    parser = _Refs()
    parser.feed(text)
    files = [r for r in parser.refs if not r.startswith("data:")]
    assert VIEWER_SCRIPT in files and "depth.png" in files and "meshes/bump%20%231.glb" in files
    for ref in files:
        assert "://" not in ref and not ref.startswith("/"), ref
        assert (out_dir / unquote(ref)).is_file(), ref
    assert (out_dir / VIEWER_SCRIPT).read_bytes() == (Path(__file__).parents[1] / "core" / VIEWER_SCRIPT).read_bytes()
    assert (out_dir / "static" / "model-viewer.LICENSE").read_text().lstrip().startswith("Apache License")

    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    for escaped in ("bump &lt;mesh&gt;", "depth &amp; &lt;normals&gt;", "side&lt;x&gt;", "a&lt;b", "Maps &amp; metrics"):
        assert escaped in text
    assert "<td class=\"v\">0.1235</td>" in text

    # The embedded model is the GLB file itself, and a valid mesh.
    embedded = [r for r in parser.refs if r.startswith("data:model/gltf-binary;base64,")]
    glb = (out_dir / "meshes" / "bump #1.glb").read_bytes()
    assert len(embedded) == 1 and b64decode(embedded[0].split(",", 1)[1]) == glb
    mesh = trimesh.load(BytesIO(glb), file_type="glb", force="mesh")
    assert len(mesh.faces) == 2 * 15 * 15 and len(mesh.vertices) == 256

    # Above the embed limit the model is referenced by its relative path.
    small = write_result_page(tmp_path / "run", "t", [PageSection("s", [Model("meshes/bump #1.glb")])], embed_limit=10)
    assert 'src="meshes/bump%20%231.glb"' in small.read_text() and "data:model" not in small.read_text()


def test_page_rejects_bad_items(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        write_result_page(tmp_path, "t", [PageSection("s", [Image("missing.png")])])
    with pytest.raises(ValueError, match="not inside"):
        write_result_page(tmp_path / "sub", "t", [PageSection("s", [Image(tmp_path / "a.png")])])
    with pytest.raises(ValueError, match="glb"):
        write_result_page(tmp_path, "t", [PageSection("s", [Model("a.png")])])
    with pytest.raises(TypeError):
        write_result_page(tmp_path, "t", [PageSection("s", ["a.png"])])


class _DevTools:
    """Minimal Chrome DevTools protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, args: list[str]):
        to_browser_r, self._write_fd = os.pipe()
        self._read_fd, from_browser_w = os.pipe()

        def fds():  # the browser reads commands on fd 3 and writes replies on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(args, preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 20.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
                raise TimeoutError(f"no DevTools reply to {method} within {timeout} s")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk

    def close(self):
        for fd in (self._write_fd, self._read_fd):
            os.close(fd)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.proc.stderr.close()


def _rendered(shot: np.ndarray) -> tuple[bool, str]:
    """Whether a viewer screenshot shows the red | green textured, shaded model over the plain background."""
    rgb = shot[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 100) & (r > 2 * g) & (r > 2 * b)
    green = (g > 100) & (g > 2 * r) & (g > 2 * b)
    shading = float(r[red].std()) if red.any() else 0.0
    report = f"red {red.mean():.3f}, green {green.mean():.3f}, red shading std {shading:.2f}"
    return bool(red.mean() > 0.03 and green.mean() > 0.03 and shading > 1.0), report


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason="chromium not found: install it with `apt-get install chromium` (.ci/run does)")
def test_model_renders_in_headless_chromium(tmp_path):
    page = _write_page(tmp_path / "run")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    browser = _DevTools([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
        "--window-size=900,900", "--remote-debugging-pipe", "about:blank",
    ])
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        def evaluate(expression: str, timeout: float = 60.0):
            result = browser.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                       "returnByValue": True}, session, timeout)
            return result["result"].get("value")

        browser.call("Page.navigate", {"url": page.as_uri()}, session)
        # Typically 3-10 s on 2 busy CPU cores: SwiftShader compiles the shaders and renders the first frame.
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            status = evaluate("document.querySelector('model-viewer')?.dataset.status ?? null")
            if status in ("loaded", "error"):
                break
            time.sleep(0.2)
        caption = evaluate("document.querySelector('model-viewer').parentElement.textContent")
        assert status == "loaded", f"model-viewer status {status!r}; caption: {caption!r}"

        # The first frames follow the load event: take screenshots of the viewer until the model shows.
        box = evaluate("(() => { const r = document.querySelector('model-viewer').getBoundingClientRect();"
                       " return [r.x, r.y, r.width, r.height]; })()")
        clip = dict(zip(("x", "y", "width", "height"), box), scale=1)
        ok, report = False, "no screenshot"
        deadline = time.monotonic() + 15
        while not ok and time.monotonic() < deadline:
            evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
            data = browser.call("Page.captureScreenshot", {"format": "png", "clip": clip}, session)["data"]
            shot = np.asarray(PILImage.open(BytesIO(b64decode(data))).convert("RGB"))
            ok, report = _rendered(shot)
        if not ok:
            PILImage.fromarray(shot).save(tmp_path / "viewer.png")
        assert ok, f"the model did not render ({report}); screenshot: {tmp_path / 'viewer.png'}"
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
