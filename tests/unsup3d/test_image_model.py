"""The methods' image model against the dataset's: a ladder of checks that isolate one part each.

1. Geometry: the dataset's frontal depth of an identity, warped by the methods' renderer into a test view, is the
   dataset's depth of that view.
2. Shading: the methods' render of the true canonical depth, albedo, view and light matches the dataset image; the
   stored light is in the camera frame and must be turned into the canonical one (``method_light``).
3. Optimisation: a free per-pixel canonical depth and albedo, fitted photometrically to a few views with their
   true views and lights, moves towards the true shape.
"""

import numpy as np
import pytest
import torch

from benchmark.datasets.sdf_faces import render_faces, sample_identities
from benchmark.datasets.synface_proc import method_light, method_view
from methods.gan2shape.model import Geometry, render
from methods.renderer.warp import warp_canon_depth
from methods.unsup3d.losses import depth_curvature
from metrics.shape import shape_metrics

S = 64
VIEWS = np.array([[20.0, -10.0, 3.0], [-25.0, 8.0, -4.0], [12.0, 12.0, 2.0], [-30.0, -5.0, 0.0]])
LIGHTS = np.array([[0.3, 0.8, -0.6, 0.2], [0.35, 0.6, 0.7, -0.2], [0.25, 0.85, 0.2, 0.6], [0.3, 0.7, -0.8, 0.5]],
                  np.float32)


@pytest.fixture(scope="module")
def scenes():
    """Four identities: posed image and depth, frontal depth, albedo (k_a 1, k_d 0), with a black background."""
    n = len(VIEWS)
    params = sample_identities(np.random.default_rng(3), n, 0.05)
    bg = torch.zeros(n, 3, S, S)
    posed = render_faces(params, VIEWS, LIGHTS, bg, S)
    frontal = render_faces(params, np.zeros_like(VIEWS), LIGHTS, bg, S)
    albedo = render_faces(params, np.zeros_like(VIEWS), np.tile([[1.0, 0.0, 0.0, 0.0]], (n, 1)).astype(np.float32),
                          bg, S)["rgb"]
    to_img = lambda rgb: rgb.permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    return {"image": to_img(posed["rgb"]), "depth": posed["depth"], "mask": posed["mask"],
            "frontal_image": to_img(frontal["rgb"]), "canon_depth": frontal["depth"], "albedo": to_img(albedo),
            "frontal_mask": frontal["mask"]}


def _head_error(image, target, mask, valid):
    m = (mask & (valid[:, 0] > 0.5)).float()
    return float(((image - target).abs().mean(1) * m).sum() / m.sum())


def test_warped_frontal_depth_is_the_posed_depth(scenes):
    geom = Geometry(border_factor=1.0)
    warped = warp_canon_depth(scenes["canon_depth"], method_view(torch.from_numpy(VIEWS)), geom.renderer)
    flipped = torch.from_numpy(VIEWS * np.array([-1.0, 1.0, 1.0]))  # yaw sign flipped
    wrong = warp_canon_depth(scenes["canon_depth"], method_view(flipped), geom.renderer)
    m = scenes["mask"] & (warped < 1.09) & (scenes["depth"] < 1.09)
    err, err_wrong = (warped - scenes["depth"]).abs()[m].mean(), (wrong - scenes["depth"]).abs()[m].mean()
    assert err < 2e-3 and err_wrong > 4 * err, (float(err), float(err_wrong))


def test_render_of_the_truth_matches_the_dataset_image(scenes):
    """Tolerances from measurement (mean absolute on the head, images in [-1, 1]): ~0.02 frontal (normals from a
    64 px depth map against analytic ones), ~0.04 posed (plus the texture warp and surfaces a height field cannot
    show); the stored camera-frame light used as if canonical is 2.5x worse."""
    geom = Geometry(border_factor=1.0)
    n = len(VIEWS)
    views = torch.from_numpy(VIEWS).float()
    light_frontal = method_light(torch.zeros(n, 3), torch.from_numpy(LIGHTS))
    out = render(scenes["canon_depth"], scenes["albedo"], torch.zeros(n, 6), light_frontal, geom)
    frontal_err = _head_error(out.image, scenes["frontal_image"], scenes["frontal_mask"], out.valid)
    light = method_light(views, torch.from_numpy(LIGHTS))
    out = render(scenes["canon_depth"], scenes["albedo"], method_view(views), light, geom)
    posed_err = _head_error(out.image, scenes["image"], scenes["mask"], out.valid)
    out = render(scenes["canon_depth"], scenes["albedo"], method_view(views), light_frontal, geom)
    camera_frame_err = _head_error(out.image, scenes["image"], scenes["mask"], out.valid)
    assert frontal_err < 0.035, frontal_err
    assert posed_err < 0.06, posed_err
    assert camera_frame_err > 2 * posed_err, (camera_frame_err, posed_err)


def test_multiview_fit_moves_towards_the_true_shape():
    """Per-pixel canonical depth and albedo fitted to 6 views of a bump rendered by the methods' own renderer
    (true views and lights): the input-view depth error falls well below the flat start within 150 steps."""
    torch.manual_seed(0)
    size, n = 32, 6
    geom = Geometry(border_factor=1.0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    true_depth = (1.0 - 0.06 * torch.exp(-(xx**2 + (yy * 0.8) ** 2) / 0.35)).unsqueeze(0)
    true_albedo = (0.4 + 0.15 * torch.sin(3 * xx + 2 * yy)).expand(1, 3, size, size).contiguous()
    view = torch.zeros(n, 6)
    view[:, 1] = torch.linspace(-0.45, 0.45, n)
    view[:, 0] = torch.tensor([0.1, -0.1, 0.15, -0.15, 0.05, -0.05])
    light = torch.tensor([[-0.2, 0.5, 0.6, 0.2], [-0.2, 0.5, -0.6, 0.3], [-0.2, 0.5, 0.2, -0.4]]).repeat(2, 1)
    with torch.no_grad():
        target = render(true_depth.expand(n, -1, -1), true_albedo.expand(n, -1, -1, -1), view, light, geom)
    raw_d = torch.zeros(1, size, size, requires_grad=True)
    raw_a = torch.zeros(1, 3, size, size, requires_grad=True)
    opt = torch.optim.Adam([raw_d, raw_a], lr=0.03)

    def mad():
        with torch.no_grad():
            d = 1 + 0.1 * torch.tanh(raw_d)
            out = render(d.expand(n, -1, -1), torch.tanh(raw_a).expand(n, -1, -1, -1), view, light, geom)
            valid = out.valid[:, 0] * target.valid[:, 0]
            return float(shape_metrics(out.view_depth, target.view_depth, valid)["mad"].mean())

    start = mad()
    for _ in range(150):
        d = 1 + 0.1 * torch.tanh(raw_d)
        out = render(d.expand(n, -1, -1), torch.tanh(raw_a).expand(n, -1, -1, -1), view, light, geom)
        m = out.valid * target.valid
        loss = ((out.image - target.image).abs() * m).sum() / m.sum()
        opt.zero_grad()
        (loss + 2.0 * depth_curvature(d)).backward()
        opt.step()
    end = mad()
    assert end < 0.6 * start, (start, end)


def _fit_view(scenes, translation: bool, true_light: bool = True, steps: int = 100) -> torch.Tensor:
    """Fit only the 6-d view (from the frontal one) to the posed images, canonical depth, albedo and light given
    (the true light, or a frontal guess)."""
    geom = Geometry(border_factor=1.0)
    views = torch.from_numpy(VIEWS).float()
    light = (method_light(views, torch.from_numpy(LIGHTS)) if true_light
             else torch.tensor([[0.0, 0.5, 0.0, 0.0]]).repeat(len(VIEWS), 1))
    keep = torch.tensor([1.0, 1, 1, float(translation), float(translation), 0])
    raw = torch.zeros(len(VIEWS), 6, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.01)
    for _ in range(steps):
        out = render(scenes["canon_depth"], scenes["albedo"], raw * keep, light, geom)
        loss = ((out.image - scenes["image"]).abs() * out.valid).sum() / out.valid.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (raw * keep).detach()


def test_view_fit_finds_the_pose_only_without_translation(scenes):
    """Rung 4, the views. Given the true canonical depth, albedo and light, descending the photometric loss from
    the frontal view reaches the true rotation for 3 of the 4 heads when the view has no translation (none of
    synface_proc's views has one). With Unsup3d's translation (+-0.1) it stalls at about half the yaw on 2 of
    them: a sideways shift of the head explains the yaw's lateral motion first, and the small facial features then
    sit outside the basin of the true pose. Measured (yaw error, degrees): 0.5, 16, 0.1, 0.1 without translation;
    9.9, 10.6, 3.0, 2.1 with it.

    The light matters as much: with a frontal light guess instead of the true side light, the descent explains
    the shading by turning the head, often the wrong way (yaw errors 22, 24, 11, 25 degrees)."""
    true_yaw = torch.from_numpy(VIEWS[:, 0]).float()
    err_rot = (_fit_view(scenes, translation=False)[:, 1] * 60 - true_yaw).abs()
    err_trans = (_fit_view(scenes, translation=True)[:, 1] * 60 - true_yaw).abs()
    err_light = (_fit_view(scenes, translation=False, true_light=False)[:, 1] * 60 - true_yaw).abs()
    assert (err_rot < 2).sum() >= 3, err_rot
    assert (err_trans > 5).sum() >= 2 and err_trans.sum() > 1.2 * err_rot.sum(), (err_trans, err_rot)
    assert (err_light > 5).all(), err_light


def _multiview_fit_on_dataset_views(depth_res: int, steps: int = 150) -> tuple[float, float]:
    """MAD (input-view depth, degrees) before and after fitting one identity's canonical depth and per-pixel
    albedo to 10 dataset renders (sphere tracer) with their true views and canonical lights, from a flat head
    (silhouette kept). The depth offset is a ``depth_res`` x ``depth_res`` grid, bilinearly upsampled to 64 px."""
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    n = 10
    params = np.repeat(sample_identities(rng, 1, 0.05), n, 0)
    views_deg = np.stack([rng.uniform(-30, 30, n), rng.uniform(-10, 10, n), rng.uniform(-3, 3, n)], 1)
    lights = np.stack([rng.uniform(0.2, 0.45, n), rng.uniform(0.5, 0.9, n), rng.uniform(-0.8, 0.8, n),
                       rng.uniform(-0.6, 0.8, n)], 1).astype(np.float32)
    bg = torch.zeros(n, 3, S, S)
    posed = render_faces(params, views_deg, lights, bg, S)
    head = render_faces(params[:1], np.zeros((1, 3)), lights[:1], bg[:1], S)["mask"]
    target = posed["rgb"].permute(0, 3, 1, 2).float() / 127.5 - 1
    geom = Geometry(border_factor=1.0)
    views = method_view(torch.from_numpy(views_deg).float())
    light = method_light(torch.from_numpy(views_deg).float(), torch.from_numpy(lights))
    flat = torch.where(head, torch.full((1, S, S), 0.95), torch.full((1, S, S), 1.1))
    offset = torch.zeros(1, 1, depth_res, depth_res, requires_grad=True)
    albedo = torch.zeros(1, 3, S, S, requires_grad=True)
    opt = torch.optim.Adam([offset, albedo], lr=1e-3)
    truth_mask = posed["depth"] < 1.09

    def depth():
        up = F.interpolate(offset, size=(S, S), mode="bilinear", align_corners=False)[:, 0]
        return flat + torch.where(head, up, torch.zeros_like(up))

    def mad():
        with torch.no_grad():
            view_depth = warp_canon_depth(depth().expand(n, S, S), views, geom.renderer)
            return float(shape_metrics(view_depth, posed["depth"], truth_mask)["mad"].nanmean())

    start = mad()
    for _ in range(steps):
        out = render(depth().expand(n, S, S), albedo.expand(n, 3, S, S), views, light, geom)
        m = posed["mask"][:, None].float() * out.valid
        loss = ((out.image - target).abs() * m).sum() / (m.sum() * 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, mad()


def test_multiview_fit_on_dataset_images_converges_only_with_a_coarse_depth():
    """Rung 1 on our own images (weights/README.md point 11): with the true views and lights, a depth offset on an
    8 x 8 grid converges from a flat head (MAD 36 -> 23 in 150 steps, 15 in 600), while a free per-pixel depth
    drifts away (36 -> 41, 47 in 600): at full resolution the photometric fit falls into texture-copy minima even
    when nothing but the shape is unknown. The method's own renders of the truth behave the same, so this is not
    the image-model mismatch."""
    start, coarse = _multiview_fit_on_dataset_views(8)
    _, fine = _multiview_fit_on_dataset_views(S)
    assert coarse < 0.75 * start, (start, coarse)
    assert fine > start and fine > coarse + 10, (start, fine, coarse)
