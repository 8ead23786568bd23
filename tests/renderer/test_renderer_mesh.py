"""Mesh export: OBJ/PLY/GLB of a sphere cap round-trip through trimesh with the right size, bounds, normals and UVs."""

import numpy as np
import pytest
import torch
import trimesh

from methods.renderer.camera import depth_to_normals, depth_to_points, intrinsics
from core.images import image_to_uint8
from methods.renderer.mesh import depth_to_mesh, export_mesh

SIZE = 16


@pytest.fixture(scope="module")
def cap():
    """Sphere cap depth ``(S, S)``, a position-coded texture ``(3, S, S)`` and ``K``."""
    K = intrinsics(SIZE, dtype=torch.float64)
    ray = depth_to_points(torch.ones(1, SIZE, SIZE, dtype=torch.float64), K)[0]
    centre = torch.tensor([0.0, 0.0, 1.3], dtype=torch.float64)
    b, a = ray @ centre, (ray * ray).sum(-1)
    depth = (b - (b * b - a * (centre @ centre - 0.35**2)).sqrt()) / a
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    texture = torch.stack([cols, rows, -cols * rows])
    return depth.float(), texture, K.float()


def expected_vertices(depth, K):
    points = depth_to_points(depth[None].double(), K.double())[0].reshape(-1, 3)
    return (100 * torch.stack([points[:, 0], -points[:, 1], 1 - points[:, 2]], 1)).numpy()


def test_depth_to_mesh_geometry_and_orientation(cap):
    depth, texture, K = cap
    mesh = depth_to_mesh(depth, texture, K)
    assert mesh.vertices.shape == (SIZE * SIZE, 3) and mesh.faces.shape == (2 * (SIZE - 1) ** 2, 3)
    np.testing.assert_allclose(mesh.vertices, expected_vertices(depth, K), atol=1e-4)
    # Normals face the viewer on +z; the camera sits at (0, 0, 100).
    assert (mesh.face_normals[:, 2] > 0.5).all()
    to_camera = np.array([0.0, 0.0, 100.0]) - mesh.triangles_center
    assert ((mesh.face_normals * to_camera).sum(1) > 0).all()
    # The cap bulges towards the camera: the centre vertex is the nearest one.
    assert mesh.vertices[:, 2].argmax() in {SIZE // 2 * SIZE + SIZE // 2, (SIZE // 2 - 1) * SIZE + SIZE // 2 - 1,
                                             (SIZE // 2 - 1) * SIZE + SIZE // 2, SIZE // 2 * SIZE + SIZE // 2 - 1}


@pytest.mark.parametrize("fmt", ["obj", "ply", "glb"])
def test_round_trip_through_trimesh(cap, tmp_path, fmt):
    depth, texture, K = cap
    normal = depth_to_normals(depth[None], K)[0].permute(2, 0, 1)
    export_mesh(tmp_path / f"recon.{fmt}", depth, texture, K, albedo=texture * 0.5, normal=normal)
    loaded = trimesh.load(tmp_path / f"recon.{fmt}", process=False, force="mesh")
    expected = expected_vertices(depth, K)
    assert loaded.vertices.shape == (SIZE * SIZE, 3) and len(loaded.faces) == 2 * (SIZE - 1) ** 2
    np.testing.assert_allclose(loaded.bounds, np.stack([expected.min(0), expected.max(0)]), atol=1e-3)
    assert (loaded.face_normals[:, 2] > 0.5).all()
    visual = loaded.visual if fmt == "ply" else loaded.visual.to_color()  # PLY carries vertex colours
    colours = visual.vertex_colors[:, :3].astype(int)
    np.testing.assert_allclose(colours, image_to_uint8(texture).reshape(-1, 3).astype(int), atol=2)
    assert (tmp_path / "recon_albedo.png").exists() and (tmp_path / "recon_normal.png").exists()
    if fmt == "obj":
        assert {"recon.mtl", "recon.png"} <= {p.name for p in tmp_path.iterdir()}


def test_uv_maps_vertex_to_its_pixel(cap):
    depth, texture, K = cap
    mesh = depth_to_mesh(depth, texture, K)
    uv = mesh.visual.uv.reshape(SIZE, SIZE, 2)
    assert uv[0, 0].tolist() == [0.0, 1.0] and uv[-1, -1].tolist() == [1.0, 0.0]  # image top row has v = 1
    colours = mesh.visual.to_color().vertex_colors[:, :3].reshape(SIZE, SIZE, 3)
    np.testing.assert_array_equal(colours, image_to_uint8(texture))


def test_format_choice_and_errors(cap, tmp_path):
    depth, texture, K = cap
    export_mesh(tmp_path / "mesh.bin", depth, texture, K, fmt="glb")
    assert trimesh.load(tmp_path / "mesh.bin", file_type="glb", force="mesh").vertices.shape[0] == SIZE * SIZE
    with pytest.raises(ValueError, match="format"):
        export_mesh(tmp_path / "mesh.stl", depth, texture, K)
    with pytest.raises(ValueError):
        export_mesh(tmp_path / "mesh.obj", depth[None], texture, K)
