"""View/light prior files: documented shapes, positive-definite covariances, readable by GAN2Shape."""

import json
from dataclasses import replace

import pytest
import torch

from methods.gan2shape.pseudo import load_view_light_prior
from methods.unsup3d.prior import fit_gaussian, predict_view_light, write_prior
from methods.unsup3d.training import TrainConfig, create_state, predict
from tests.unsup3d.test_unsup3d_training import TINY, _data


def test_fit_gaussian_matches_torch_cov():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    prior = fit_gaussian(x, jitter=0.0)
    torch.testing.assert_close(prior.cov, torch.cov(x.T))
    torch.testing.assert_close(prior.mean, x.mean(0))


@pytest.mark.parametrize("spread", [False, True])
def test_prior_files_have_documented_shapes_and_pd_covariances(tmp_path, spread):
    net = create_state(replace(TINY, view_spread=spread, view_spread_pitch=0.5 * spread), TrainConfig(), seed=0).net
    if spread:  # the views as the model sees them: standardised by the running statistics
        net.set_view_spread(15.0)
        net.view_spread[[0, 1, 3, 4]] = torch.tensor([0.01, 0.02, -0.01, 0.03])
    views, lights = predict_view_light(net, _data(6), batch_size=4)
    assert net.training  # left as it was
    assert views.shape == (6, 6) and lights.shape == (6, 4)
    full = predict(net, _data(6), batch_size=4)  # the same as the full forward pass's view and light
    torch.testing.assert_close(views.float(), torch.cat([o.view for o in full]))
    torch.testing.assert_close(lights.float(), torch.cat([o.light for o in full]))
    for name, samples, dim in (("view", views, 6), ("light", lights, 4)):
        path = write_prior(tmp_path / f"{name}.json", fit_gaussian(samples), {"kind": name})
        data = json.loads(path.read_text())
        assert len(data["mean"]) == dim and len(data["cov"]) == dim and data["dim"] == dim
        prior = load_view_light_prior(path, dim)  # checks symmetry and positive definiteness
        assert torch.linalg.eigvalsh(prior.cov.double()).min() > 0
