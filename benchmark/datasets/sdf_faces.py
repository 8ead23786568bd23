"""Procedural SDF heads and a vectorised sphere tracer: the renderer behind the ``synface_proc`` dataset.

Independent of the methods' differentiable renderer (only ``methods.renderer.camera.intrinsics`` is shared), so that
it can serve as a reference for it.

Camera (``method.md`` section 2): fov 10 degrees, ``f = ((S - 1) / 2) / tan(5 deg)``, ``c = (S - 1) / 2``, x right,
y down, z forward, pixel centres at integer coordinates; the camera sits at the origin. Depth is the z-coordinate of
the first hit (depth along the optical axis, not ray length).

Head frame ("unit frame"): the same axes as the camera (x right, y down, z away from the camera, so the face looks
towards -z), origin at the rotation centre ``C = (0, 0, 1)``, unit = one head half-width (``scale`` world units,
0.058-0.069). A camera point is ``P = R (s q) + C`` with ``R = Rz(roll) Ry(yaw) Rx(pitch)`` (the method's view
transform ``P' = R (P - c) + c`` with ``c = C``; standard right-handed elementary matrices).

Heads: smooth unions/subtractions of ellipsoids, spheres, a tapered capsule (nose) and a capped cylinder (neck),
clipped by a bounding ellipsoid; left/right features have their own parameters (``asymmetry`` perturbs them).

Tracing (``render_faces``): rays start where they enter the bounding ellipsoid; cones through 2x2 pixel blocks
are marched first and hand their stopping point to their four pixel rays; pixel rays stop at
``|sdf| < 0.05 px`` footprint and take secant steps near the surface. Along a ray every primitive's squared
distance is a quadratic in the ray parameter, so the march evaluates the SDF from per-ray coefficients
(``ray_coefficients`` / ``face_sdf_ray``); shading uses the point form ``face_sdf`` (central differences).
``sphere_trace`` is the plain, general tracer for any SDF (used as a reference in tests).

Determinism: the per-ray maths uses only IEEE-exact element-wise operations (+, -, *, /, sqrt, min, max, abs,
floor), so results are bit-identical for any thread count; random numbers come from numpy generators.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from methods.renderer.camera import intrinsics

__all__ = [
    "FAR_DEPTH", "ROT_CENTER", "N_PARAMS", "sample_identities", "rotation_matrices", "sphere_trace", "render_faces",
]

FAR_DEPTH = 1.1  # background depth; every foreground depth is strictly smaller (as float32)
ROT_CENTER = (0.0, 0.0, 1.0)
_BOUND_C = (0.0, 0.3, 0.05)  # bounding ellipsoid of the head in the unit frame (clips the neck below the frame)
_BOUND_R = (1.5, 2.0, 1.6)
_HIT_PX = 0.05  # hit tolerance of the pixel rays: |sdf| < 0.05 pixel footprint (+ eps)
_SECANT = 1e-3  # world distance below which the fine march takes secant steps
_RELAX = 0.9  # step factor: the ellipsoid and smooth-subtraction distances are not exact


# ----------------------------------------------------------------------------------------------------------------
# Parameter layout: one float32 row per number; per-ray tables are (rows, n) so each row is contiguous.
# ----------------------------------------------------------------------------------------------------------------
class _Layout:
    def __init__(self) -> None:
        self.off: dict[str, int] = {}
        self.n = 0

    def add(self, name: str, size: int) -> None:
        self.off[name] = self.n
        self.n += size

    def __getitem__(self, name: str) -> int:
        return self.off[name]


# Geometry rows: a block of ellipsoids stored as (cx, cy, cz, 1/rx, 1/ry, 1/rz, r_min) x N_ELL rows each (so one
# (7, N_ELL, n) view evaluates all of them at once), a block of spheres (cx, cy, cz, r) x N_SPH, the nose (tapered
# capsule: root, root->tip, 1/|root->tip|^2, r_root, r_tip) and the neck (cx, cz, r, y_top).
ELLIPSOIDS = ["cranium", "face", "jaw", "brow0", "brow1", "socket0", "socket1", "lip_u", "lip_l", "mouth", "ear0",
              "ear1"]
SPHERES = ["chin", "cheek0", "cheek1", "eye0", "eye1", "ala0", "ala1"]
_EI = {name: i for i, name in enumerate(ELLIPSOIDS)}
_SI = {name: i for i, name in enumerate(SPHERES)}
N_ELL, N_SPH = len(ELLIPSOIDS), len(SPHERES)
GEOM = _Layout()
GEOM.add("ell", 7 * N_ELL)
GEOM.add("sph", 4 * N_SPH)
GEOM.add("nose", 9)
GEOM.add("neck", 4)
ALB = _Layout()
for _name, _size in [
    ("skin", 3), ("hair", 3), ("brow_col", 3), ("iris", 3), ("lip_col", 3), ("hairline", 3),
    ("browshape0", 5), ("browshape1", 5), ("noise", 15), ("noise_asym", 15), ("blush", 1), ("scale", 1),
]:
    ALB.add(_name, _size)
N_GEOM, N_ALB = GEOM.n, ALB.n
N_PARAMS = N_GEOM + N_ALB


# ----------------------------------------------------------------------------------------------------------------
# Identity sampling (numpy, float64 then float32)
# ----------------------------------------------------------------------------------------------------------------
_HAIR = np.array([[0.05, 0.04, 0.035], [0.16, 0.10, 0.06], [0.33, 0.21, 0.12], [0.72, 0.57, 0.33],
                  [0.50, 0.20, 0.09], [0.55, 0.55, 0.55]])
_HAIR_P = np.array([0.3, 0.25, 0.2, 0.1, 0.07, 0.08])
_IRIS = np.array([[0.30, 0.17, 0.08], [0.12, 0.07, 0.04], [0.22, 0.38, 0.58], [0.28, 0.40, 0.24],
                  [0.42, 0.32, 0.14]])
_SKIN_DARK, _SKIN_LIGHT = np.array([0.30, 0.18, 0.12]), np.array([0.93, 0.76, 0.64])


def sample_identities(rng: np.random.Generator, n: int, asymmetry: float = 0.05) -> np.ndarray:
    """Draw ``n`` identities: a float32 table ``(n, N_PARAMS)`` of geometry then albedo parameters (unit frame).

    The same random numbers are drawn whatever ``asymmetry`` is; ``asymmetry`` only scales the left/right
    differences, so ``asymmetry = 0`` gives exactly mirror-symmetric geometry and albedo.
    """
    U = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    a = float(asymmetry)
    G = np.zeros((n, N_GEOM))
    A = np.zeros((n, N_ALB))

    def put_e(name, c, r):
        o = GEOM["ell"] + _EI[name]
        for i in range(3):
            G[:, o + i * N_ELL] = c[i]
            G[:, o + (3 + i) * N_ELL] = 1.0 / np.asarray(r[i])
        G[:, o + 6 * N_ELL] = np.minimum(np.minimum(r[0], r[1]), r[2])

    def put_s(name, c, r):
        o = GEOM["sph"] + _SI[name]
        for i in range(3):
            G[:, o + i * N_SPH] = c[i]
        G[:, o + 3 * N_SPH] = r

    def pair(base_c, scale_xyz=0.6, scale_r=0.5):
        """Centres and radius factors of a left/right pair: side 0 at -x, side 1 at +x; mirror images when a = 0."""
        d = rng.standard_normal((2, 4, n))
        out = []
        for side, sgn in enumerate((-1.0, 1.0)):
            c = (sgn * base_c[0] + a * scale_xyz * d[side, 0], base_c[1] + a * scale_xyz * d[side, 1],
                 base_c[2] + a * scale_xyz * d[side, 2])
            out.append((c, 1.0 + a * scale_r * d[side, 3]))
        return out

    # head proportions
    cr_c = (np.zeros(n), U(-0.32, -0.2), U(0.05, 0.15))
    cr_r = (U(0.93, 1.04), U(1.05, 1.18), U(1.12, 1.28))
    fa_c = (np.zeros(n), U(0.15, 0.25), np.full(n, -0.25))
    fa_r = (U(0.78, 0.9), U(0.95, 1.1), U(0.8, 0.9))
    put_e("cranium", cr_c, cr_r)
    put_e("face", fa_c, fa_r)

    def zs(x, y):  # front surface of the face ellipsoid
        t = 1.0 - (x / fa_r[0]) ** 2 - ((y - fa_c[1]) / fa_r[1]) ** 2
        return fa_c[2] - fa_r[2] * np.sqrt(np.clip(t, 0.0, None))

    sx = a * 0.5 * rng.standard_normal((4, n))  # midline shifts: nose tip, mouth, chin, jaw
    put_e("jaw", (sx[3] * 0.3, U(0.55, 0.65), U(-0.15, -0.05)), (U(0.62, 0.78), np.full(n, 0.55), np.full(n, 0.7)))
    chin_r, chin_y = U(0.22, 0.3), U(0.9, 1.0)
    put_s("chin", (sx[2] * 0.3, chin_y, zs(0, chin_y) + chin_r - U(0.02, 0.08)), chin_r)
    # cheeks
    ch_r, ch_x, ch_y, ch_p = U(0.26, 0.34), U(0.38, 0.46), U(0.22, 0.35), U(0.0, 0.04)
    for side, (c, k) in enumerate(pair((ch_x, ch_y, zs(ch_x, ch_y) + ch_r - ch_p))):
        put_s(f"cheek{side}", c, ch_r * k)
    # eyes: sockets, eyeballs; brow ridges above
    ex, ey, e_r = U(0.3, 0.38), U(-0.22, -0.12), U(0.14, 0.17)
    sock_deep, recess = U(0.06, 0.12), U(0.015, 0.045)
    ez = zs(ex, ey)
    eye_pairs = pair((ex, ey, ez), 0.5, 0.4)
    for side, (c, k) in enumerate(eye_pairs):
        put_e(f"socket{side}", (c[0], c[1], c[2] - sock_deep), (0.21 * k, 0.105 * k, 0.2 * k))
        put_s(f"eye{side}", (c[0], c[1], c[2] + recess + e_r), e_r)
    by, b_p = U(-0.47, -0.38), U(0.03, 0.08)
    for side, (c, k) in enumerate(pair((ex + 0.02, by, zs(ex, by) + 0.18 - b_p))):
        put_e(f"brow{side}", c, (0.27 * k, 0.085 * k, 0.18 * k))
    # nose: tapered capsule root -> tip, plus alae
    root_y, tip_y, prot = U(-0.22, -0.12), U(0.2, 0.32), U(0.17, 0.3)
    r_root, r_tip = U(0.06, 0.085), U(0.08, 0.115)
    root = np.stack([np.zeros(n), root_y, zs(0, root_y) + r_root * 0.7])
    tip = np.stack([sx[0], tip_y, zs(0, tip_y) - prot + r_tip])
    ba = tip - root
    o = GEOM["nose"]
    G[:, o:o + 3] = root.T
    G[:, o + 3:o + 6] = ba.T
    G[:, o + 6] = 1.0 / (ba**2).sum(0)
    G[:, o + 7], G[:, o + 8] = r_root, r_tip
    aw, a_r = U(0.1, 0.15), U(0.065, 0.085)
    for side, (c, k) in enumerate(pair((aw, tip_y + 0.02, zs(aw, tip_y) - prot * 0.45 + a_r), 0.3)):
        put_s(f"ala{side}", (c[0] + sx[0] * 0.7, c[1], c[2]), a_r * k)
    # mouth
    my, mw, lt, lp = U(0.55, 0.65), U(0.22, 0.3), U(0.045, 0.075), U(0.02, 0.06)
    mz = zs(0, my)
    put_e("lip_u", (sx[1], my - lt * 0.8, mz + 0.1 - lp), (mw, lt, np.full(n, 0.1)))
    put_e("lip_l", (sx[1], my + lt * 1.1, mz + 0.1 - lp * 0.8), (mw * 0.88, lt * 1.2, np.full(n, 0.1)))
    put_e("mouth", (sx[1], my, mz - 0.05), (mw * 1.08, np.full(n, 0.012), np.full(n, 0.13)))
    # ears
    ear_y, ear_z, ear_h = U(-0.12, 0.02), U(0.08, 0.2), U(0.24, 0.32)
    for side, (c, k) in enumerate(pair((cr_r[0] * 0.93, ear_y, ear_z), 0.5, 0.4)):
        put_e(f"ear{side}", c, (0.09 * k, ear_h * k, 0.17 * k))
    o = GEOM["neck"]
    G[:, o], G[:, o + 1], G[:, o + 2], G[:, o + 3] = 0.0, U(0.15, 0.3), U(0.48, 0.6), 0.3

    # ---- albedo
    tone = rng.uniform(0.0, 1.0, n) ** 0.8
    skin = _SKIN_DARK + tone[:, None] * (_SKIN_LIGHT - _SKIN_DARK)
    skin = skin * (1.0 + 0.05 * rng.standard_normal((n, 1)) + 0.025 * rng.standard_normal((n, 3)))
    hair = _HAIR[rng.choice(len(_HAIR), n, p=_HAIR_P)] * (1.0 + 0.12 * rng.standard_normal((n, 1)))
    A[:, ALB["skin"]:ALB["skin"] + 3] = skin
    A[:, ALB["hair"]:ALB["hair"] + 3] = hair
    A[:, ALB["brow_col"]:ALB["brow_col"] + 3] = np.minimum(hair * 0.75, skin * 0.55)
    A[:, ALB["iris"]:ALB["iris"] + 3] = _IRIS[rng.integers(0, len(_IRIS), n)] * U(0.8, 1.2)[:, None]
    lipc = skin * np.array([0.85, 0.6, 0.6]) + np.array([0.06, 0.0, 0.01]) * U(0.3, 1.0)[:, None]
    A[:, ALB["lip_col"]:ALB["lip_col"] + 3] = lipc
    o = ALB["hairline"]
    A[:, o], A[:, o + 1], A[:, o + 2] = U(-0.98, -0.72), U(0.15, 0.45), U(0.15, 0.45)
    bw, bh, arch = U(0.22, 0.3), U(0.035, 0.06), U(0.0, 0.06)
    for side, (c, k) in enumerate(pair((ex + 0.03, by - 0.02, np.zeros(n)), 0.4, 0.4)):
        o = ALB[f"browshape{side}"]
        sgn = 1.0 if side else -1.0  # signed width: the brow tapers towards the temple on both sides
        A[:, o], A[:, o + 1], A[:, o + 2], A[:, o + 3], A[:, o + 4] = c[0], c[1], sgn * bw * k, bh * k, arch
    o = ALB["noise"]
    for term in range(3):
        fr = rng.uniform(0.25, 0.8, (n, 3)) * (1.6**term)
        A[:, o + 5 * term:o + 5 * term + 3] = fr
        A[:, o + 5 * term + 3] = rng.uniform(0, 1, n)
        A[:, o + 5 * term + 4] = U(0.01, 0.035)
    o = ALB["noise_asym"]
    for term in range(3):
        A[:, o + 5 * term:o + 5 * term + 3] = rng.uniform(0.3, 1.5, (n, 3))
        A[:, o + 5 * term + 3] = rng.uniform(0, 1, n)
        A[:, o + 5 * term + 4] = a * U(0.2, 0.6)
    A[:, ALB["blush"]] = U(0.0, 0.08)
    A[:, ALB["scale"]] = U(0.058, 0.069)
    return np.concatenate([G, A], axis=1).astype(np.float32)


def rotation_matrices(view_deg: np.ndarray) -> np.ndarray:
    """``R = Rz(roll) Ry(yaw) Rx(pitch)`` for views ``(B, 3)`` = (yaw, pitch, roll) in degrees; float64 (B, 3, 3)."""
    v = np.radians(np.asarray(view_deg, dtype=np.float64))
    yaw, pitch, roll = v[:, 0], v[:, 1], v[:, 2]
    o, z = np.ones_like(yaw), np.zeros_like(yaw)

    def m(rows):
        return np.stack([np.stack(r, -1) for r in rows], -2)

    rx = m([[o, z, z], [z, np.cos(pitch), -np.sin(pitch)], [z, np.sin(pitch), np.cos(pitch)]])
    ry = m([[np.cos(yaw), z, np.sin(yaw)], [z, o, z], [-np.sin(yaw), z, np.cos(yaw)]])
    rz = m([[np.cos(roll), -np.sin(roll), z], [np.sin(roll), np.cos(roll), z], [z, z, o]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------------------------------------------
# SDF maths on component tensors (x, y, z each (n,)); parameter rows P[i] are (n,)
# ----------------------------------------------------------------------------------------------------------------
def _smin(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Quadratic smooth minimum: ``min(a, b) - h^2 / (4k)``, ``h = max(k - |a - b|, 0)`` (in-place temporaries)."""
    h = (a - b).abs_().neg_().add_(k).clamp_min_(0.0)
    return torch.minimum(a, b).sub_(h.mul_(h).mul_(0.25 / k))


def _smax(a: Tensor, b: Tensor, k: float) -> Tensor:
    h = (a - b).abs_().neg_().add_(k).clamp_min_(0.0)
    return torch.maximum(a, b).add_(h.mul_(h).mul_(0.25 / k))


def _ellipsoids(x, y, z, P, idx=None):
    """Approximate SDF of the ellipsoid block (all of them, (N_ELL, n), or the one at index ``idx``, (n,)).

    Outside: Quilez's ``k0 (k0 - 1) / k1`` (close to the true distance); inside: the Lipschitz bound
    ``(k0 - 1) r_min``, because the outside formula overestimates there and rays would bounce in carved sockets.
    """
    E = P[GEOM["ell"]:GEOM["ell"] + 7 * N_ELL].view(7, N_ELL, -1)
    if idx is not None:
        E = E[:, idx]
    ax, ay, az = (x - E[0]).mul_(E[3]), (y - E[1]).mul_(E[4]), (z - E[2]).mul_(E[5])
    k0 = (ax * ax).add_(ay * ay).add_(az * az).sqrt_()
    ax.mul_(E[3]), ay.mul_(E[4]), az.mul_(E[5])
    k1 = (ax * ax).add_(ay * ay).add_(az * az).sqrt_().clamp_min_(1e-12)
    k0m = k0 - 1.0
    return torch.where(k0m > 0, k0.mul_(k0m).div_(k1), k0m.mul_(E[6]))


def _spheres(x, y, z, P):
    S = P[GEOM["sph"]:GEOM["sph"] + 4 * N_SPH].view(4, N_SPH, -1)
    dx, dy, dz = x - S[0], y - S[1], z - S[2]
    return (dx * dx).add_(dy * dy).add_(dz * dz).sqrt_().sub_(S[3])


def _ellipsoid_const(x, y, z, c, r):
    ax, ay, az = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    k0 = (ax * ax + ay * ay + az * az).sqrt()
    ax, ay, az = ax / r[0], ay / r[1], az / r[2]
    return k0 * (k0 - 1.0) / (ax * ax + ay * ay + az * az).sqrt().clamp_min(1e-12)


def _tapered_capsule(x, y, z, P, o):
    px, py, pz = x - P[o], y - P[o + 1], z - P[o + 2]
    bx, by, bz = P[o + 3], P[o + 4], P[o + 5]
    h = ((px * bx + py * by + pz * bz) * P[o + 6]).clamp(0.0, 1.0)
    px, py, pz = px - bx * h, py - by * h, pz - bz * h
    return (px * px + py * py + pz * pz).sqrt() - (P[o + 7] + (P[o + 8] - P[o + 7]) * h)


def _smoothstep(e0: float, e1: float, x: Tensor) -> Tensor:
    t = ((x - e0) * (1.0 / (e1 - e0))).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _psin(t: Tensor) -> Tensor:
    """A smooth periodic wave of period 1 in [-1, 1] built from exact operations (a sine stand-in)."""
    f = t - torch.floor(t)
    tri = (2.0 * f - 1.0).abs()
    return 2.0 * tri * tri * (3.0 - 2.0 * tri) - 1.0


def _combine(E: Tensor, S: Tensor, nose: Tensor, neck: Tensor | None, bound: Tensor) -> Tensor:
    """The head's CSG tree over primitive distances: ellipsoids E (N_ELL, n), spheres S (N_SPH, n), nose, neck
    and the bounding ellipsoid (n,). Left/right pairs are joined by a hard min first (they never overlap), which
    keeps the field exactly mirror-symmetric when their parameters are. ``neck=None`` leaves the neck out."""
    e, s = _EI, _SI
    d = _smin(E[e["cranium"]], E[e["face"]], 0.4)
    d = _smin(d, E[e["jaw"]], 0.3)
    d = _smin(d, S[s["chin"]], 0.2)
    d = _smin(d, torch.minimum(S[s["cheek0"]], S[s["cheek1"]]), 0.25)
    d = _smin(d, torch.minimum(E[e["brow0"]], E[e["brow1"]]), 0.12)
    d = _smax(d, -torch.minimum(E[e["socket0"]], E[e["socket1"]]), 0.08)
    d = torch.minimum(d, torch.minimum(S[s["eye0"]], S[s["eye1"]]))
    d = _smin(d, nose, 0.1)
    d = _smin(d, torch.minimum(S[s["ala0"]], S[s["ala1"]]), 0.05)
    d = _smin(d, torch.minimum(E[e["lip_u"]], E[e["lip_l"]]), 0.05)
    d = _smax(d, -E[e["mouth"]], 0.025)
    d = _smin(d, torch.minimum(E[e["ear0"]], E[e["ear1"]]), 0.06)
    if neck is not None:
        d = _smin(d, neck, 0.3)
    return torch.maximum(d, bound)


def _neck(x: Tensor, y: Tensor, z: Tensor, P: Tensor) -> Tensor:
    o = GEOM["neck"]
    dx, dz = x - P[o], z - P[o + 1]
    return torch.maximum((dx * dx + dz * dz).sqrt() - P[o + 2], P[o + 3] - y)


def face_sdf(x: Tensor, y: Tensor, z: Tensor, P: Tensor, with_neck: bool = True) -> Tensor:
    """Signed distance (unit frame) of the heads with geometry rows ``P`` (N_GEOM, n) at points ``(x, y, z)``."""
    return _combine(_ellipsoids(x, y, z, P), _spheres(x, y, z, P), _tapered_capsule(x, y, z, P, GEOM["nose"]),
                    _neck(x, y, z, P) if with_neck else None, _ellipsoid_const(x, y, z, _BOUND_C, _BOUND_R))


def is_neck(x: Tensor, y: Tensor, z: Tensor, P: Tensor) -> Tensor:
    """Parser label of surface points: True where the neck is nearer than the rest of the head (the part a face
    parser's labels 1-14 leave out, like CelebAMask-HQ's neck class)."""
    return _neck(x, y, z, P) < face_sdf(x, y, z, P, with_neck=False)


# Along a ray q(s) = q_ref + s d every squared distance is a quadratic in s, so the march precomputes its
# coefficients once per ray (about 130 rows) and each step costs a fraction of a point evaluation. Expanding around
# the ray's start (not the camera) keeps the float32 cancellation small.
_RC = _Layout()
for _name, _size in [("ell", 7 * N_ELL), ("sph", 3 * N_SPH), ("dd", 1), ("nose", 7), ("neck", 7), ("bound", 6)]:
    _RC.add(_name, _size)


def _quad(ax, ay, az, bx, by, bz):
    return ax * ax + ay * ay + az * az, 2.0 * (ax * bx + ay * by + az * bz), bx * bx + by * by + bz * bz


def ray_coefficients(q: list[Tensor], d: list[Tensor], P: Tensor) -> Tensor:
    """Coefficients (rows, n) of the head SDF along rays starting at ``q`` (unit frame) with direction ``d``."""
    n = q[0].shape[0]
    rows = []
    E = P[GEOM["ell"]:GEOM["ell"] + 7 * N_ELL].view(7, N_ELL, n)
    ax, ay, az = (q[0] - E[0]) * E[3], (q[1] - E[1]) * E[4], (q[2] - E[2]) * E[5]
    bx, by, bz = d[0] * E[3], d[1] * E[4], d[2] * E[5]
    rows += _quad(ax, ay, az, bx, by, bz)
    rows += _quad(ax * E[3], ay * E[4], az * E[5], bx * E[3], by * E[4], bz * E[5])
    rows.append(E[6])
    S = P[GEOM["sph"]:GEOM["sph"] + 4 * N_SPH].view(4, N_SPH, n)
    px, py, pz = q[0] - S[0], q[1] - S[1], q[2] - S[2]
    rows += [px * px + py * py + pz * pz, 2.0 * (px * d[0] + py * d[1] + pz * d[2]), S[3]]
    rows.append((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).unsqueeze(0))
    o = GEOM["nose"]
    px, py, pz = q[0] - P[o], q[1] - P[o + 1], q[2] - P[o + 2]
    bx, by, bz = P[o + 3], P[o + 4], P[o + 5]
    rows.append(torch.stack([px * px + py * py + pz * pz, 2.0 * (px * d[0] + py * d[1] + pz * d[2]),
                             px * bx + py * by + pz * bz, d[0] * bx + d[1] * by + d[2] * bz,
                             bx * bx + by * by + bz * bz, P[o + 7], P[o + 8]]))
    o = GEOM["neck"]
    px, pz = q[0] - P[o], q[2] - P[o + 1]
    rows.append(torch.stack([px * px + pz * pz, 2.0 * (px * d[0] + pz * d[2]), d[0] * d[0] + d[2] * d[2], q[1], d[1],
                             P[o + 2], P[o + 3]]))
    c, r = _BOUND_C, _BOUND_R
    ax, ay, az = (q[0] - c[0]) / r[0], (q[1] - c[1]) / r[1], (q[2] - c[2]) / r[2]
    bx, by, bz = d[0] / r[0], d[1] / r[1], d[2] / r[2]
    rows.append(torch.stack(_quad(ax, ay, az, bx, by, bz)
                            + _quad(ax / r[0], ay / r[1], az / r[2], bx / r[0], by / r[1], bz / r[2])))
    return torch.cat([x.reshape(-1, n) for x in rows], dim=0)


def face_sdf_ray(s: Tensor, C: Tensor) -> Tensor:
    """The head SDF (unit frame) at parameter ``s`` (n,) along rays with coefficients ``C`` (rows, n)."""
    n = s.shape[0]

    def quad(c2, c1, c0):  # (c2 s + c1) s + c0, a fresh tensor
        return (c2 * s).add_(c1).mul_(s).add_(c0)

    E = C[_RC["ell"]:_RC["ell"] + 7 * N_ELL].view(7, N_ELL, n)
    k0 = quad(E[2], E[1], E[0]).clamp_min_(0.0).sqrt_()
    k1 = quad(E[5], E[4], E[3]).clamp_min_(1e-24).sqrt_()
    k0m = k0 - 1.0
    de = torch.where(k0m > 0, k0.mul_(k0m).div_(k1), k0m.mul_(E[6]))
    S = C[_RC["sph"]:_RC["sph"] + 3 * N_SPH].view(3, N_SPH, n)
    dd = C[_RC["dd"]]
    ds = (S[1] + dd * s).mul_(s).add_(S[0]).clamp_min_(0.0).sqrt_().sub_(S[2])
    N = C[_RC["nose"]:_RC["nose"] + 7]
    proj = N[3] * s + N[2]
    h = (proj / N[4]).clamp_(0.0, 1.0)
    dist2 = quad(dd, N[1], N[0]).sub_(h * (2.0 * proj - h * N[4]))
    nose = dist2.clamp_min_(0.0).sqrt_().sub_((N[6] - N[5]).mul_(h).add_(N[5]))
    K = C[_RC["neck"]:_RC["neck"] + 7]
    neck = torch.maximum(quad(K[2], K[1], K[0]).clamp_min_(0.0).sqrt_().sub_(K[5]), K[6] - (K[4] * s).add_(K[3]))
    B = C[_RC["bound"]:_RC["bound"] + 6]
    b0 = quad(B[2], B[1], B[0]).clamp_min_(0.0).sqrt_()
    bound = (b0 - 1.0).mul_(b0).div_(quad(B[5], B[4], B[3]).clamp_min_(1e-24).sqrt_())
    return _combine(de, ds, nose, neck, bound)


def face_albedo(x: Tensor, y: Tensor, z: Tensor, G: Tensor, A: Tensor) -> Tensor:
    """Albedo in [0, 1], shape (3, n), at surface points of the heads (geometry rows G, albedo rows A)."""
    ax = x.abs()
    noise = torch.zeros_like(x)
    o = ALB["noise"]
    for t in range(3):
        r = o + 5 * t
        noise = noise + A[r + 4] * _psin(A[r] * ax + A[r + 1] * y + A[r + 2] * z + A[r + 3])
    o = ALB["noise_asym"]
    for t in range(3):
        r = o + 5 * t
        noise = noise + A[r + 4] * _psin(A[r] * x + A[r + 1] * y + A[r + 2] * z + A[r + 3])
    front = _smoothstep(-0.3, -0.6, z)
    # cheek blush
    cheek = torch.zeros_like(x)
    Sg = G[GEOM["sph"]:GEOM["sph"] + 4 * N_SPH].view(4, N_SPH, -1)
    for s in "01":
        j = _SI["cheek" + s]
        dx, dy = x - Sg[0, j], y - Sg[1, j]
        cheek = torch.maximum(cheek, _smoothstep(0.09, 0.0, dx * dx + dy * dy))
    cheek = cheek * front * A[ALB["blush"]]
    skin = [A[ALB["skin"] + i] * (1.0 + noise) for i in range(3)]
    skin[1] = skin[1] * (1.0 - cheek)
    skin[2] = skin[2] * (1.0 - cheek)
    col = skin
    # hair: above a curved hairline and on the back of the head (not on ears/neck)
    o = ALB["hairline"]
    hair = _smoothstep(0.04, -0.04, y - (A[o] + A[o + 1] * x * x))
    back = _smoothstep(A[o + 2] - 0.05, A[o + 2] + 0.05, z) * _smoothstep(0.45, 0.25, y)
    hair = torch.maximum(hair, back)
    for s in "01":
        ear = _ellipsoids(x, y, z, G, _EI["ear" + s])
        hair = hair * _smoothstep(0.0, 0.06, ear)
    col = [c + (A[ALB["hair"] + i] - c) * hair for i, c in enumerate(col)]
    # brows
    brow = torch.zeros_like(x)
    for s in "01":
        o = ALB["browshape" + s]
        u = (x - A[o]) / A[o + 2]
        yc = A[o + 1] - A[o + 4] * (1.0 - u * u)
        v = (y - yc) / (A[o + 3] * (1.0 - 0.4 * u))
        brow = torch.maximum(brow, _smoothstep(1.0, 0.6, u * u + v * v))
    brow = brow * front
    col = [c + (A[ALB["brow_col"] + i] - c) * brow for i, c in enumerate(col)]
    # lips
    lip = _smoothstep(0.03, 0.005, torch.minimum(_ellipsoids(x, y, z, G, _EI["lip_u"]),
                                                  _ellipsoids(x, y, z, G, _EI["lip_l"])))
    col = [c + (A[ALB["lip_col"] + i] - c) * lip for i, c in enumerate(col)]
    # eyes: sclera, iris, pupil on the eyeball; a dark lash line just around it
    for s in "01":
        j = _SI["eye" + s]
        dx, dy, dz = x - Sg[0, j], y - Sg[1, j], z - Sg[2, j]
        dist = (dx * dx + dy * dy + dz * dz).sqrt()
        on = _smoothstep(0.012, 0.004, dist - Sg[3, j])
        lash = _smoothstep(0.045, 0.012, dist - Sg[3, j]) * (1.0 - on) * _smoothstep(0.3, -0.2, dy / Sg[3, j])
        cosg = -dz / dist.clamp_min(1e-6)
        iris = _smoothstep(0.86, 0.89, cosg)
        pupil = _smoothstep(0.96, 0.97, cosg)
        for i in range(3):
            sclera = 0.8 - 0.03 * i
            e = sclera + (A[ALB["iris"] + i] - sclera) * iris
            e = e + (0.03 - e) * pupil
            col[i] = col[i] + (e - col[i]) * on
            col[i] = col[i] * (1.0 - 0.6 * lash)
    return torch.stack(col).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Sphere tracing
# ----------------------------------------------------------------------------------------------------------------
def _march(dist_fn, t0: Tensor, t1: Tensor, state: list[Tensor], *, steps: int, eps: float, relax: float,
           accept_eps: float, cone: float = 0.0, track: bool = False, secant: float = 0.0, compact_every: int = 4):
    """March rays from ``t0`` until ``|sdf| < eps + cone * t`` (hit) or ``t > t1`` (miss).

    Per-ray ``state`` tensors (last dim n) are passed to ``dist_fn(t, state)`` and compacted with the active set.
    After ``steps``, a ray still marching counts as a hit if ``|sdf| < accept_eps + cone * t``. Returns ``t`` (n,)
    (the hit; for rays that did not finish, how far they got; inf for misses) and the hit mask; with ``track``
    also the minimum of ``sdf / t`` along each ray and the ``t`` where it occurred (closest approach in angular
    terms, for silhouette coverage).
    With ``secant > 0``, rays with ``|sdf| < secant`` take secant steps (see below).
    """
    n = t0.shape[0]
    t_out = torch.full((n,), math.inf, dtype=t0.dtype)
    hit = torch.zeros(n, dtype=torch.bool)
    ratio_out = torch.full((n,), math.inf, dtype=t0.dtype)
    tmin_out = t0.clone()
    idx = torch.arange(n)
    t, far, st = t0.clone(), t1, state
    ratio, tmin = ratio_out.clone(), t0.clone()
    t_prev = d_prev = torch.full((n,), math.nan, dtype=t0.dtype)
    for step in range(steps):
        if t.numel() == 0:
            break
        d = dist_fn(t, st)
        if track:
            r = d / t
            better = r < ratio
            ratio = torch.where(better, r, ratio)
            tmin = torch.where(better, t, tmin)
        tol = eps + cone * t
        if secant > 0:
            # close to the surface, step to the root of the secant through the last two samples along the ray
            # (superlinear at oblique incidence, where plain steps shrink only by 1 - cos(angle) per step)
            ad = d.abs()
            slope = (d_prev - d) / (t - t_prev)
            use = (ad < secant) & (slope > 0.05)
            step_len = torch.where(use, (d / slope).clamp(-4.0 * ad, 4.0 * ad), relax * d)
            t_prev, d_prev = t, d
            t = t + step_len
        else:
            t = t + relax * d
        last = step == steps - 1
        if (step + 1) % compact_every == 0 or last:
            conv = d.abs() < (tol if not last else tol + (accept_eps - eps))
            missed = t > far
            done = conv & ~missed
            t_out[idx[done]] = t[done]
            hit[idx[done]] = True
            if track:
                fin = conv | missed
                ratio_out[idx[fin]] = ratio[fin]
                tmin_out[idx[fin]] = tmin[fin]
            keep = (~(conv | missed)).nonzero().squeeze(1)
            if track and last:
                ratio_out[idx[keep]] = ratio[keep]
                tmin_out[idx[keep]] = tmin[keep]
            idx, t, far = idx[keep], t[keep], far[keep]
            st = [s.index_select(s.dim() - 1, keep) for s in st]
            if secant > 0:
                t_prev, d_prev = t_prev[keep], d_prev[keep]
            if track:
                ratio, tmin = ratio[keep], tmin[keep]
    if idx.numel():  # unfinished rays report how far they got: still a lower bound of their hit
        t_out[idx] = torch.minimum(t, far)
    if track:
        return t_out, hit, ratio_out, tmin_out
    return t_out, hit


def sphere_trace(sdf: Callable[..., Tensor], K: Tensor | None = None, image_size: int = 64, batch_size: int = 1, *,
                 near: float = 0.5, far: float = 2.0, steps: int = 256, eps: float = 1e-6, relax: float = 1.0,
                 background: float = FAR_DEPTH, chunk: int = 1 << 15) -> tuple[Tensor, Tensor]:
    """Ray-cast an arbitrary SDF with the method's camera; returns ``depth`` (B, S, S) float32 and ``mask`` (B, S, S).

    Args:
        sdf: ``sdf(points)`` or ``sdf(points, index)`` with camera-frame ``points`` (n, 3) and the image index of each
            ray ``index`` (n,) int64 (for batches of different shapes); returns signed distances (n,) in world units
            (negative inside).
        K: intrinsics (3, 3) (default ``intrinsics(image_size)``: fov 10 degrees).
        near, far: depth (z) range searched; rays that leave it are background.
        steps, eps, relax: march length, hit tolerance on ``|sdf|``, step factor (< 1 for non-exact SDFs).
        background: depth written where there is no hit.
    Depth is the z-coordinate of the hit (along the optical axis), for rays through pixel centres at integer
    coordinates.

    >>> d, m = sphere_trace(lambda p: (p - torch.tensor([0.0, 0.0, 1.0])).norm(dim=-1) - 0.05, image_size=16)
    >>> bool(m[0, 8, 8]), round(float(d[0, 8, 8]), 2)
    (True, 0.95)
    """
    if K is None:
        K = intrinsics(image_size)
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    try:
        two_args = len(inspect.signature(sdf).parameters) >= 2
    except (TypeError, ValueError):
        two_args = True
    fn = sdf if two_args else (lambda p, i: sdf(p))
    S, B = image_size, batch_size
    vv, uu = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    u_all, v_all = uu.reshape(-1).repeat(B), vv.reshape(-1).repeat(B)
    img_all = torch.arange(B).repeat_interleave(S * S)
    depth = torch.full((B * S * S,), float(background), dtype=torch.float32)
    mask = torch.zeros(B * S * S, dtype=torch.bool)
    for lo in range(0, B * S * S, chunk):
        sl = slice(lo, lo + chunk)
        u, v, img = u_all[sl], v_all[sl], img_all[sl]
        dx, dy = (u - cx) / fx, (v - cy) / fy
        inv = 1.0 / (dx * dx + dy * dy + 1.0).sqrt()
        dx, dy, dz = dx * inv, dy * inv, inv

        def dist(t, st):
            p = torch.stack([t * st[0], t * st[1], t * st[2]], dim=-1)
            return fn(p, st[3]).to(t.dtype)

        t, hit = _march(dist, near / dz, far / dz, [dx, dy, dz, img], steps=steps, eps=eps, relax=relax,
                        accept_eps=eps * 10, compact_every=8)
        z = t * dz
        ok = hit & (z < far)
        d_chunk = depth[sl]
        d_chunk[ok] = z[ok]
        mask[sl] = ok
    return depth.view(B, S, S), mask.view(B, S, S)


# ----------------------------------------------------------------------------------------------------------------
# Face rendering
# ----------------------------------------------------------------------------------------------------------------
class _Rays:
    """Rays through pixel positions (u, v) of images ``img``, expressed in each head's unit frame.

    ``q(t) = o + t d`` with ``t`` the distance along the unit camera ray in world units; ``t0``/``t1`` delimit the
    bounding ellipsoid (and the far plane z = FAR_DEPTH); ``valid`` marks rays that meet it.
    """

    def __init__(self, scene: "_Scene", img: Tensor, u: Tensor, v: Tensor):
        self.img = img
        dx, dy = (u - scene.c) / scene.f, (v - scene.c) / scene.f
        inv = 1.0 / (dx * dx + dy * dy + 1.0).sqrt()
        dx, dy, self.dz = dx * inv, dy * inv, inv
        r = scene.Rt.index_select(1, img)  # (9, n): R^T row-major
        inv_s = 1.0 / scene.scale[img]
        cz = ROT_CENTER[2]
        self.o = [-(r[3 * i + 2] * cz) * inv_s for i in range(3)]
        self.d = [(r[3 * i] * dx + r[3 * i + 1] * dy + r[3 * i + 2] * self.dz) * inv_s for i in range(3)]
        qb = [(self.o[i] - _BOUND_C[i]) / _BOUND_R[i] for i in range(3)]
        db = [self.d[i] / _BOUND_R[i] for i in range(3)]
        qa = db[0] * db[0] + db[1] * db[1] + db[2] * db[2]
        qh = qb[0] * db[0] + qb[1] * db[1] + qb[2] * db[2]
        qc = qb[0] * qb[0] + qb[1] * qb[1] + qb[2] * qb[2] - 1.0
        disc = qh * qh - qa * qc
        sq = disc.clamp_min(0.0).sqrt()
        self.t0 = ((-qh - sq) / qa).clamp_min(0.0)
        self.t1 = torch.minimum((-qh + sq) / qa, FAR_DEPTH / self.dz)
        self.valid = (disc > 0) & (self.t1 > self.t0)


class _Scene:
    """Per-image parameters of a batch: identity rows, scale, rotation, light; camera f and c."""

    def __init__(self, params: Tensor, rot: Tensor, light: Tensor, f: float, c: float):
        self.Gt = params[:, :N_GEOM].T.contiguous()  # (N_GEOM, B)
        self.At = params[:, N_GEOM:].T.contiguous()  # (N_ALB, B)
        self.scale = params[:, N_GEOM + ALB["scale"]].contiguous()
        self.Rt = rot.transpose(1, 2).reshape(-1, 9).T.contiguous()  # rows of R^T, (9, B)
        self.light = light
        self.f, self.c = f, c

    def trace(self, rays: _Rays, *, t_start: Tensor | None = None, cone: float = 0.0, steps: int = 48,
              eps: float = 2e-6, accept: float = 1e-4, track: bool = False, chunk: int = 1 << 15):
        """March the valid rays; returns t (inf for misses), hit, and with ``track`` the min of sdf/t and its t."""
        n = rays.img.shape[0]
        t_all = torch.full((n,), math.inf)
        hit_all = torch.zeros(n, dtype=torch.bool)
        ratio_all = torch.full((n,), math.inf)
        tmin_all = torch.zeros(n)
        t0 = rays.t0 if t_start is None else torch.maximum(rays.t0, t_start)
        cand_all = (rays.valid & (t0 < rays.t1)).nonzero().squeeze(1)
        for lo in range(0, cand_all.numel(), chunk):
            cand = cand_all[lo:lo + chunk]
            im = rays.img[cand]
            t_ref = t0[cand]
            dvec = [rays.d[i][cand] for i in range(3)]
            q_ref = [rays.o[i][cand] + t_ref * dvec[i] for i in range(3)]
            state = [t_ref, self.scale[im], ray_coefficients(q_ref, dvec, self.Gt.index_select(1, im))]

            def dist(t, st):
                return st[1] * face_sdf_ray(t - st[0], st[2])

            out = _march(dist, t0[cand], rays.t1[cand], state, steps=steps, eps=eps, relax=_RELAX, accept_eps=accept,
                         cone=cone, track=track, secant=_SECANT if eps > 0.0 else 0.0)
            t_all[cand], hit_all[cand] = out[0], out[1]
            if track:
                ratio_all[cand], tmin_all[cand] = out[2], out[3]
        hit_all &= (t_all * rays.dz) < FAR_DEPTH
        return t_all, hit_all, ratio_all, tmin_all

    def neck(self, rays: _Rays, sel: Tensor, t: Tensor) -> Tensor:
        """True (m,) where the surface points at ``t`` (m,) on rays ``sel`` (m,) belong to the neck."""
        im = rays.img[sel]
        q = [rays.o[i][sel] + t * rays.d[i][sel] for i in range(3)]
        return is_neck(q[0], q[1], q[2], self.Gt.index_select(1, im))

    def shade(self, rays: _Rays, sel: Tensor, t: Tensor, chunk: int = 1 << 14) -> Tensor:
        """Colour (3, m) in [0, 1] of the points at ``t`` (m,) on rays ``sel`` (m,)."""
        if sel.numel() > chunk:
            return torch.cat([self.shade(rays, sel[i:i + chunk], t[i:i + chunk]) for i in range(0, sel.numel(), chunk)],
                             dim=1)
        im = rays.img[sel]
        q = [rays.o[i][sel] + t * rays.d[i][sel] for i in range(3)]
        G, A = self.Gt.index_select(1, im), self.At.index_select(1, im)
        # outward normal by central differences in the unit frame (mirror-exact), rotated into the camera frame
        e = 2e-3
        gx = face_sdf(q[0] + e, q[1], q[2], G) - face_sdf(q[0] - e, q[1], q[2], G)
        gy = face_sdf(q[0], q[1] + e, q[2], G) - face_sdf(q[0], q[1] - e, q[2], G)
        gz = face_sdf(q[0], q[1], q[2] + e, G) - face_sdf(q[0], q[1], q[2] - e, G)
        r = self.Rt.index_select(1, im)  # R[j][i] = r[3 * i + j]
        n = [r[j] * gx + r[3 + j] * gy + r[6 + j] * gz for j in range(3)]
        inv_n = 1.0 / (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt().clamp_min(1e-20)
        lt = self.light[im].T  # (4, m): k_a, k_d, dx, dy
        inv_l = 1.0 / (lt[2] * lt[2] + lt[3] * lt[3] + 1.0).sqrt()
        # the method's normals point away from the camera (n = -outward), its light is l = (dx, dy, 1) / norm
        ndotl = -(n[0] * lt[2] + n[1] * lt[3] + n[2]) * inv_l * inv_n
        shading = lt[0] + lt[1] * ndotl.clamp_min(0.0)
        return (face_albedo(q[0], q[1], q[2], G, A) * shading).clamp(0.0, 1.0)


def render_faces(params: np.ndarray | Tensor, view_deg: np.ndarray, light: np.ndarray | Tensor,
                 background: Tensor, image_size: int, *, antialias: bool = True, steps: int = 48,
                 chunk: int = 1 << 15) -> dict[str, Tensor]:
    """Render heads. ``params`` (B, N_PARAMS); ``view_deg`` (B, 3) (yaw, pitch, roll) degrees; ``light`` (B, 4)
    (k_a, k_d, dx, dy); ``background`` (B, 3, S, S) in [0, 1].

    Returns ``rgb`` (B, S, S, 3) uint8, ``depth`` (B, S, S) float32 (z of the first hit through the pixel centre,
    ``FAR_DEPTH`` on background), ``mask`` (B, S, S) bool (a hit at the pixel centre) and ``head_mask`` (B, S, S)
    bool (a hit that is not on the neck: what an oracle face parser would label). Rays are first marched as
    cones through 2x2 pixel blocks (a cone that stays clear of the surface proves its four pixel rays can start where
    it stopped, or miss), then per pixel. With ``antialias``, background pixels next to the silhouette get the
    colour of the surface at the ray's closest approach, weighted by the estimated pixel coverage
    ``clamp(0.5 - distance_in_pixels, 0, 1)``; depth, mask and every foreground colour are those of the pixel centre.
    """
    params = torch.as_tensor(params, dtype=torch.float32)
    light = torch.as_tensor(light, dtype=torch.float32)
    rot = torch.as_tensor(rotation_matrices(view_deg), dtype=torch.float32)
    B, S = params.shape[0], image_size
    K = intrinsics(S, dtype=torch.float64)
    f, c = float(K[0, 0]), float(K[0, 2])
    scene = _Scene(params, rot, light, f, c)
    ar = torch.arange(S, dtype=torch.float32)
    vv, uu = torch.meshgrid(ar, ar, indexing="ij")
    rays = _Rays(scene, torch.arange(B).repeat_interleave(S * S), uu.reshape(-1).repeat(B), vv.reshape(-1).repeat(B))
    t_start = None
    if S % 2 == 0 and S >= 8:
        h = S // 2
        ab = torch.arange(h, dtype=torch.float32) * 2.0 + 0.5
        vb, ub = torch.meshgrid(ab, ab, indexing="ij")
        coarse = _Rays(scene, torch.arange(B).repeat_interleave(h * h), ub.reshape(-1).repeat(B),
                       vb.reshape(-1).repeat(B))
        # cone radius per unit t: the block's pixel rays lie within 0.71 px of its centre; 2x margin for the
        # approximate SDF
        t_c, hit_c, _, _ = scene.trace(coarse, cone=1.42 / f, steps=steps, eps=0.0, accept=0.0, chunk=chunk)
        # a cone that left the bound clear: all four rays miss; one that stopped (or ran out of steps): they start there
        t_c = torch.where(torch.isfinite(t_c), t_c * 0.999, t_c)
        parent = (torch.arange(B).view(B, 1, 1) * h * h + (torch.arange(S) // 2).view(1, S, 1) * h
                  + (torch.arange(S) // 2).view(1, 1, S)).reshape(-1)
        t_start = t_c[parent]
    t, hit, ratio, tmin = scene.trace(rays, t_start=t_start, cone=_HIT_PX / f, steps=steps, track=antialias,
                                      chunk=chunk)
    bg = background.to(torch.float32).permute(1, 0, 2, 3).reshape(3, -1)
    out = bg.clone()
    h_idx = hit.nonzero().squeeze(1)
    head = hit.clone()
    if h_idx.numel():
        out[:, h_idx] = scene.shade(rays, h_idx, t[h_idx])
        head[h_idx] = ~scene.neck(rays, h_idx, t[h_idx])
    if antialias:
        m = hit.view(B, 1, S, S).float()
        near_fg = torch.nn.functional.max_pool2d(m, 3, 1, 1).view(-1) > 0
        cover = (0.5 - ratio * f).clamp(0.0, 1.0)
        e = (near_fg & ~hit & (cover > 0) & torch.isfinite(tmin)).nonzero().squeeze(1)
        if e.numel():
            w = cover[e]
            out[:, e] = bg[:, e] * (1.0 - w) + scene.shade(rays, e, tmin[e]) * w
    depth = torch.where(hit, t * rays.dz, torch.full_like(t, FAR_DEPTH))
    rgb8 = (out * 255.0).round().clamp(0, 255).to(torch.uint8).view(3, B, S, S).permute(1, 2, 3, 0).contiguous()
    return {"rgb": rgb8, "depth": depth.view(B, S, S).to(torch.float32), "mask": hit.view(B, S, S),
            "head_mask": head.view(B, S, S)}
