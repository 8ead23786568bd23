"""GAN2Shape end to end through `bench`: ablation configs, resume after a kill between stages, outputs (GLB, OBJ,
HTML), and DDP joint pre-training with 2 gloo processes under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark.config import compose
from benchmark.runner import method_args
from methods.gan2shape.method import GAN2Shape
from methods.stylegan2.checkpoints import save_networks
from methods.stylegan2.model import Discriminator, Generator
from tests.conftest import REPO, bench, tiny_overrides

TINY_SCHEDULE = [
    "presets.gan2shape.prefit_iters=3", "presets.gan2shape.inversion_steps=3",
    "presets.gan2shape.schedule.num_stage=2", "presets.gan2shape.schedule.stage_len=[2,2,2]",
    "presets.gan2shape.schedule.stage_len_later=[25,1,1]", "presets.gan2shape.schedule.batch_size=2",
    "presets.gan2shape.schedule.collect_iters=1", "presets.gan2shape.schedule.flip1=[false,true]",
    "presets.gan2shape.schedule.flip3=[true,true]",
]


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan") / "tiny_gan.safetensors"
    G = Generator(32, style_dim=32, n_mlp=8, max_channels=16)
    save_networks(path, G, Discriminator(32, max_channels=16), {"command": "tests: untrained tiny GAN"})
    return path


def _run_args(tiny_synface, tiny_gan, work, extra=()):
    return ["run", "method=gan2shape", "preset=fast", "eval.limit=1", f"method.gan={tiny_gan}", "method.progress=false",
            f"paths.work_dir={work}", *tiny_overrides(tiny_synface), *TINY_SCHEDULE, *extra]


def test_ablations_compose_into_the_method(tiny_gan):
    cfg = compose(["method=gan2shape", "ablation=[flat_init,no_symmetry,no_offset_reg]", f"method.gan={tiny_gan}"])
    method = GAN2Shape(**method_args(cfg))
    assert method.shape_prior["kind"] == "flat" and method.hp.lam_regular == 0.0
    assert not any(method.schedule.flip1) and not any(method.schedule.flip3)
    cfg = compose(["method=gan2shape", "ablation=symmetry", "preset=paper", f"method.gan={tiny_gan}"])
    method = GAN2Shape(**method_args(cfg))
    assert all(method.schedule.flip1) and method.schedule.stage_len == (500, 500, 200)
    assert method.schedule.batch_size == 16 and method.prefit_iters == 1000


def test_published_category_presets_compose(tiny_gan):
    for category, (size, stages, f1d) in {"celeba": (128, 4, 2), "car": (128, 4, 2), "synface": (64, 1, 8)}.items():
        cfg = compose([f"method=gan2shape_{category}", f"method.gan={tiny_gan}"])
        method = GAN2Shape(**method_args(cfg))
        assert (method.image_size, method.schedule.num_stage, method.hp.F1_d) == (size, stages, f1d)


def _result(work: Path) -> dict:
    (folder,) = [p for p in work.glob("gan2shape/*/*") if (p / "result.safetensors").is_file()]
    return load_file(str(folder / "result.safetensors")), folder


def _kill_at_stage_one(args: list[str], cwd: Path, env: dict, metas) -> Path:
    """Start ``bench <args>``, SIGKILL it as soon as one of ``metas()`` (``stage.json`` paths) says the stage-1
    checkpoint is written, and return that file. Fails if the process ends before one appears. (Callers check that
    the kill came before the final output.)"""
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, stage = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        stage = next((m for m in metas() if json.loads(m.read_text()).get("next_stage") == 1), None)
        if stage is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stage is not None, f"no stage-1 checkpoint appeared: {proc.stderr.read().decode()[-2000:]}"
    return stage


def test_run_resumes_after_kill_between_stages_and_writes_outputs(tiny_synface, tiny_gan, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    killed_work = tmp_path / "killed"
    stage = _kill_at_stage_one(_run_args(tiny_synface, tiny_gan, killed_work), tmp_path, env,
                               lambda: killed_work.glob("gan2shape/*/*/stage.json"))
    assert not list(killed_work.glob("gan2shape/*/*/result.safetensors")), "killed before the result was written"
    before = json.loads(stage.read_text())["seconds"]  # phase timings up to the stage-1 checkpoint

    resumed = bench(*_run_args(tiny_synface, tiny_gan, killed_work), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    fresh = bench(*_run_args(tiny_synface, tiny_gan, tmp_path / "fresh"), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (a, folder), (b, _) = _result(killed_work), _result(tmp_path / "fresh")
    for key in a:  # the resumed run continued from the stage-1 checkpoint and ended exactly where an unbroken one does
        assert torch.equal(a[key], b[key]), key
    after = json.loads((folder / "timings.json").read_text())  # the resumed image kept the time spent before the kill
    assert before and all(after[phase] >= seconds > 0 for phase, seconds in before.items()), (before, after)

    out = folder / "outputs"
    import trimesh

    glb = trimesh.load(out / "mesh.glb", force="mesh")
    assert glb.faces.shape[0] == 2 * 63 * 63 and glb.vertices.shape[0] == 64 * 64
    obj = trimesh.load(out / "mesh.obj", force="mesh")
    assert obj.faces.shape[0] == glb.faces.shape[0]
    page = (out / "index.html").read_text()
    assert "<model-viewer" in page and (out / "static" / "model-viewer.min.js").is_file()
    for name in ("input.png", "view_depth.png", "normal.png", "albedo.png", "shading.png", "reconstruction.png",
                 "rotate_3d.png", "rotate_gan.png", "relight_3d.png", "relight_gan.png", "rotate_gan.gif"):
        assert (out / name).is_file() and f'"{name}"' in page, name


def _digests(out: Path) -> set[str]:
    return {p.read_text().strip() for p in out.glob("rank*.sha256")}


def test_ddp_joint_pretraining_gives_the_same_weights_on_both_ranks(tiny_synface, tiny_gan, tmp_path):
    common = ["model=gan2shape_pretrain", "device=cpu", "model.images=3", f"model.method.gan={tiny_gan}",
              "model.method.prefit_iters=2", "model.method.inversion.steps=2", "model.method.schedule.num_stage=2",
              "model.method.schedule.stage_len=[2,2,2]", "model.method.schedule.stage_len_later=[1,1,1]",
              "model.method.schedule.batch_size=2", "model.method.schedule.collect_iters=2", "train.num_threads=1",
              f"dataset.root={tiny_synface}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*torchrun, "-m", "benchmark.cli", "train", *common, f"train.out_dir={tmp_path}/two",
                          f"train.export={tmp_path}/two/g2s.safetensors"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    digests = _digests(tmp_path / "two")
    assert len(list((tmp_path / "two").glob("rank*.sha256"))) == 2 and len(digests) == 1
    card = json.loads((tmp_path / "two" / "g2s.json").read_text())["card"]
    assert card["world_size"] == 2 and card["sha256"] in digests
    one = bench("train", *common, f"train.out_dir={tmp_path}/one", f"train.export={tmp_path}/one/g2s.safetensors",
                cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    # rank 1's images changed the shared weights: one process alone ends elsewhere
    assert _digests(tmp_path / "one") != digests

    # the export is a one-pass predictor: gan2shape_pretrained scores it with the geometry of its card
    export = tmp_path / "one" / "g2s.safetensors"
    scored = bench("run", "method=gan2shape_pretrained", f"method.weights={export}", "eval.limit=2", "device=cpu",
                   f"dataset.root={tiny_synface}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "gan2shape_pretrained on synface_proc (2 images): side " in scored.stdout
    # weights made for another image size are refused in one line, as are weights without their card
    card = json.loads(export.with_suffix(".json").read_text())
    other = tmp_path / "other.safetensors"
    other.write_bytes(export.read_bytes())
    other.with_suffix(".json").write_text(json.dumps({**card, "image_size": 128}))
    refused = bench("run", "method=gan2shape_pretrained", f"method.weights={other}", "eval.limit=1", "device=cpu",
                    f"dataset.root={tiny_synface}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert refused.returncode == 2 and "does not fit GAN2Shape networks of image_size 128" in refused.stderr.strip().splitlines()[-1]
    # ... and by an instance run that starts from them
    refused = bench(*_run_args(tiny_synface, tiny_gan, tmp_path / "work", [f"method.pretrained={other}"]),
                    f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert refused.returncode == 2 and "was trained for image_size=128" in refused.stderr.strip().splitlines()[-1]
    other.with_suffix(".json").unlink()
    refused = bench("run", "method=gan2shape_pretrained", f"method.weights={other}", "eval.limit=1", "device=cpu",
                    f"dataset.root={tiny_synface}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert refused.returncode == 2 and "has no model card" in refused.stderr.strip().splitlines()[-1]


def test_joint_pretraining_killed_between_stages_resumes_bit_exactly(tiny_synface, tiny_gan, tmp_path):
    """``bench train model=gan2shape_pretrain`` killed after its stage-1 checkpoint and started again ends with the
    same weights, bit for bit, as an unbroken run (the per-stage random streams and fresh Adam states make the stage
    the unit of resumption)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    common = ["train", "model=gan2shape_pretrain", "device=cpu", "model.images=2", f"model.method.gan={tiny_gan}",
              "model.method.prefit_iters=2", "model.method.inversion.steps=2", "model.method.schedule.num_stage=2",
              "model.method.schedule.stage_len=[2,2,2]", "model.method.schedule.stage_len_later=[25,1,1]",
              "model.method.schedule.batch_size=2", "model.method.schedule.collect_iters=2", "train.num_threads=1",
              f"dataset.root={tiny_synface}", "train.log_every=1"]

    def args(name: str) -> list[str]:
        return [*common, f"train.out_dir={tmp_path / name}", f"train.export={tmp_path / name / 'g2s.safetensors'}",
                f"tracking.uri=sqlite:///{tmp_path / name}.db"]

    def iterations_logged(name: str) -> int:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / name}.db")
        ids = [e.experiment_id for e in client.search_experiments()]
        (run,) = client.search_runs(ids, filter_string="attributes.status = 'FINISHED'")
        return len(client.get_metric_history(run.info.run_id, "stage"))

    _kill_at_stage_one(args("killed"), tmp_path, env, lambda: (tmp_path / "killed").glob("stage.json"))
    assert not (tmp_path / "killed" / "g2s.safetensors").exists(), "killed before the export"
    for name in ("killed", "straight"):
        result = bench(*args(name), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
    assert 0 < iterations_logged("killed") < iterations_logged("straight"), "the second start redid stage 0"
    resumed, straight = (load_file(str(tmp_path / n / "g2s.safetensors")) for n in ("killed", "straight"))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_real_images_are_inverted_then_reconstructed(tiny_gan, tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand(80, 80, 3, generator=rng) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(photos / "face.png")
    work = tmp_path / "work"
    args = ["run", "experiment=reconstruct", "method=gan2shape", "dataset=image_folder", f"dataset.root={photos}",
            "method.mask=center", f"method.gan={tiny_gan}", "method.progress=false", f"paths.work_dir={work}",
            "method.outputs.gan=false", "method.outputs.mesh_formats=[glb]", *TINY_SCHEDULE,
            "presets.gan2shape.schedule.stage_len_later=[1,1,1]"]
    result = bench(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = work.glob("gan2shape/*/face")
    assert (folder / "latent.safetensors").is_file() and (folder / "outputs" / "mesh.glb").is_file()
    assert "result page: " in result.stdout
    # damaged cache files name themselves and are recomputed
    (folder / "latent.safetensors").write_bytes(b"\x00" * 10)
    (folder / "result.safetensors").write_bytes(b"not a tensor file")
    again = bench(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    for name in ("latent.safetensors", "result.safetensors"):
        assert f"{folder / name} is damaged" in again.stderr
        assert load_file(str(folder / name))


def _per_image(db: Path, experiment: str) -> tuple[str, str, list[str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    pages = sorted(a.path for a in client.list_artifacts(run.info.run_id, "images"))
    return open(client.download_artifacts(run.info.run_id, "per_image.csv")).read(), run.data.tags["world_size"], pages


def test_instance_runs_sharded_over_torchrun_ranks_match_one_process(tiny_synface, tiny_gan, tmp_path):
    """2 gloo ranks split the images, rank 0 logs one MLflow run whose per-image scores equal a 1-process run."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    args = [a for a in _run_args(tiny_synface, tiny_gan, tmp_path / "w2") if a != "eval.limit=1"]
    args = [*args[1:], "eval.limit=3", "eval.batch_size=1", "method.outputs.gan=false", "tracking.experiment=two"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*torchrun, "-m", "benchmark.cli", "run", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one_args = [a.replace("w2", "w1").replace("=two", "=one") for a in args]
    one = bench("run", *one_args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    rows2, world2, pages2 = _per_image(tmp_path / "mlflow.db", "two")
    rows1, world1, pages1 = _per_image(tmp_path / "mlflow.db", "one")
    assert (world2, world1) == ("2", "1") and rows2 == rows1 and rows1.count("\n") == 4
    assert pages2 == pages1 == ["images/test_000000", "images/test_000001", "images/test_000002"]


def test_gan2shape_rotates_gan_samples(tiny_gan, tmp_path):
    """Rotation-GAN (plain and refined) and Rotation-3D of seeded GAN samples: shapes, the source is G(w) of the
    seed, a rerun loads the cached reconstruction and gives the same images; the refinement hook sees each step."""
    from methods.base import PrepareContext
    from methods.gan2shape.steps import gan_images

    cfg = compose(["method=gan2shape", f"method.gan={tiny_gan}", "method.progress=false", "method.outputs.gan=false",
                   "method.outputs.html=false", "method.rotation.mask=center", *TINY_SCHEDULE])
    method = GAN2Shape(**method_args(cfg))
    method.prepare(PrepareContext(torch.device("cpu"), 0, tmp_path, None, "synface_proc"))
    yaw = torch.tensor([-20.0, 0.0, 20.0])
    rot = method.rotate([3, 4], yaw)
    assert rot.source.shape == (2, 3, 64, 64) and rot.rotated.shape == (2, 3, 3, 64, 64)
    w = method.G.seed_latents([3, 4])
    assert torch.allclose(rot.source, gan_images(method.G, w, 64))
    assert len(list(tmp_path.glob("gan2shape/*/seed_000003_center/result.safetensors"))) == 1
    again = method.rotate([3, 4], yaw)
    assert torch.equal(again.rotated, rot.rotated)
    method.rotation.update(mode="gan_refined", refine_steps=3)
    seen = {}
    refined = method.rotate([3, 4], yaw, on_refine_step=lambda n, k, latents: seen.update({(n, k): latents}))
    assert refined.rotated.shape == rot.rotated.shape and not torch.equal(refined.rotated, rot.rotated)
    # the hook sees every step of every source, and the last latents are the ones shown
    assert sorted(seen) == [(n, k) for n in (0, 1) for k in (1, 2, 3)]
    with torch.no_grad():
        last = gan_images(method.G, seen[(1, 3)], 64).clamp(-1, 1)
    assert torch.allclose(last, refined.rotated[1], atol=1e-5)
    # rotation.refine_reg replaces lam_regular while refining: a huge one pulls the offsets toward 0 step by step
    method.rotation.update(refine_reg=1e6, refine_lr=0.01)
    seen.clear()
    method.rotate([3], yaw[:1], on_refine_step=lambda n, k, latents: seen.update({k: (latents - w[:1]).norm()}))
    assert seen[1] > seen[2] > seen[3]
    method.rotation["mode"] = "3d"
    mesh = method.rotate([3], yaw)
    assert mesh.rotated.shape == (1, 3, 3, 64, 64)
    # the mesh render turns: the frames at -20 and +20 degrees differ, each from the other
    assert (mesh.rotated[0, 0] - mesh.rotated[0, 2]).abs().mean() > 1e-3


def test_images_fitted_concurrently_match_images_fitted_alone(tiny_gan, tmp_path):
    """parallel_images=2 fits 3 images two at a time in threads, each on its own networks: every result equals the
    one-at-a-time run's (same seeds), and the image that ran on the copied networks is not affected by the other."""
    from core.registry import MASKS
    from methods.base import PrepareContext
    from methods.gan2shape.steps import gan_images

    torch.set_num_threads(1)
    results = {}
    for parallel in (1, 2):
        cfg = compose(["method=gan2shape", f"method.gan={tiny_gan}", "method.progress=false",
                       "method.outputs.gan=false", "method.outputs.html=false", "method.outputs.mesh_formats=[]",
                       f"method.parallel_images={parallel}", *TINY_SCHEDULE])
        method = GAN2Shape(**method_args(cfg))
        method.prepare(PrepareContext(torch.device("cpu"), 0, tmp_path / str(parallel), None, "synface_proc"))
        w = method.G.seed_latents([5, 6, 7])
        batch = {"image": gan_images(method.G, w, 64), "latent": w, "index": torch.tensor([5, 6, 7])}
        folders = [method.cache / f"seed_{s}" for s in (5, 6, 7)]
        results[parallel] = method._results(batch, MASKS.create("center"), folders)
    for alone, together in zip(results[1], results[2]):
        for key in alone:
            assert torch.equal(alone[key], together[key]), key
    assert not torch.equal(results[2][0]["canon_depth"], results[2][1]["canon_depth"])


def test_run_from_pretrained_weights_uses_their_widths_geometry_and_step2_settings(tiny_gan, tmp_path):
    """Weights exported with non-default widths, a camera light, hard symmetry and F1_d=2 are loaded with exactly
    those (the method's own settings give way); kind=pretrained skips the pre-fit; no_symmetry turns the hard
    symmetry off; widths that do not fit are a one-line error."""
    from core.errors import BenchError
    from methods.base import PrepareContext
    from methods.gan2shape.method import save_networks as save_g2s
    from methods.gan2shape.model import Geometry, Networks
    from methods.gan2shape.steps import Hyper

    torch.manual_seed(0)
    nets = Networks(64, 32, nf_depth_albedo=16, nf_view_light=8, zdim=32, gn_base=4, nf_enc=8)
    geom = Geometry(border_factor=1.0, light_frame="camera", hard_symmetry=True,
                    view_spread=torch.tensor([0.0, 0.5, 15.0]))
    path = save_g2s(tmp_path / "pre.safetensors", nets, {"command": "test"}, geom, torch.float16,
                    Hyper(F1_d=2, pseudo_albedo="image"))

    def prepared(*extra):
        cfg = compose(["method=gan2shape", f"method.gan={tiny_gan}", f"presets.gan2shape.pretrained={path}",
                       "presets.gan2shape.shape_init=pretrained", *extra])  # as preset=cpu sets them
        method = GAN2Shape(**method_args(cfg))
        method.prepare(PrepareContext(torch.device("cpu"), 0, tmp_path / "work", None, "synface_proc"))
        return method

    method = prepared()
    assert (method.geom.light_frame, method.geom.hard_symmetry, method.geom.border_factor) == ("camera", True, 1.0)
    assert (method.hp.F1_d, method.hp.pseudo_albedo) == (2, "image") and method.shape_prior is None
    for key, value in nets.state_dict().items():  # float16 on disk, cast back on loading
        torch.testing.assert_close(method.nets.state_dict()[key], value.half().float())
    assert not prepared("ablation=no_symmetry").geom.hard_symmetry
    assert prepared("ablation=flat_init").shape_prior["kind"] == "flat"  # pre-fitted over the loaded D
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["arch"]["nf_depth_albedo"] = 8  # a card that does not match its tensors
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="does not fit GAN2Shape networks"):
        prepared()


def test_cache_key_follows_the_gan_bytes_not_only_its_path(tmp_path):
    """A GAN re-exported at the same path (a longer training's checkpoint) gets a fresh cache folder, so no inversion
    of the old GAN is reused; the same bytes give the same key."""
    import shutil

    from methods.base import PrepareContext

    exports = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        exports.append(tmp_path / f"export_{seed}.safetensors")
        save_networks(exports[-1], Generator(32, style_dim=32, n_mlp=8, max_channels=16),
                      Discriminator(32, max_channels=16), {"command": "tests"})
    path = tmp_path / "gan.safetensors"

    def key_for(export: Path) -> str:
        shutil.copy(export, path)
        shutil.copy(export.with_suffix(".json"), path.with_suffix(".json"))  # the architecture sidecar
        cfg = compose(["method=gan2shape", f"method.gan={path}", "method.progress=false"])
        method = GAN2Shape(**method_args(cfg))
        method.prepare(PrepareContext(torch.device("cpu"), 0, tmp_path / "work", None, "synface_proc"))
        return method.key

    first = key_for(exports[0])
    assert key_for(exports[1]) != first and key_for(exports[0]) == first
