"""Volume rendering, samplers and the deformation contract, checked against closed forms."""

import math
from dataclasses import replace

import torch

from lab_pipelines.nerf.fields import DNeRF, DNeRFConfig, FastConfig, FastDNeRF
from lab_pipelines.nerf.render import composite, hull_bounds, render_rays
from lab_pipelines.nerf.sampling import (
    PixelSampler,
    carve_occupancy,
    importance_edges,
    pixel_importance,
    sphere_bounds,
    uniform_edges,
)
from lab_pipelines.nerf.scenes import camera_rays, look_at

SMALL_DNERF = DNeRFConfig(pos_freqs=4, dir_freqs=2, time_freqs=3, width=32, depth=3, skip=2,
                          deform_width=32, deform_depth=2, n_coarse=8, n_fine=8)


def test_constant_medium_composites_to_beer_lambert():
    sigma, colour, near, far = 0.7, torch.tensor([0.2, 0.5, 0.9]), 1.0, 3.5
    edges = uniform_edges(torch.tensor([near]), torch.tensor([far]), 64, jitter=False)
    rgb, weights, opacity = composite(torch.full((1, 64), sigma), colour.expand(1, 64, 3), edges, background=1.0)
    alpha = 1 - math.exp(-sigma * (far - near))
    assert torch.allclose(opacity, torch.tensor([alpha]), atol=1e-5)
    assert torch.allclose(rgb[0], colour * alpha + (1 - alpha), atol=1e-5)
    # Weights fall off as exp(-sigma * distance) along the ray.
    ratio = weights[0, 1:] / weights[0, :-1]
    assert torch.allclose(ratio, torch.full_like(ratio, math.exp(-sigma * (far - near) / 64)), atol=1e-4)


def test_opaque_slab_hides_what_is_behind_it():
    edges = torch.linspace(0, 4, 5)[None]
    sigma = torch.tensor([[0.0, 1e4, 0.0, 1e4]])
    rgb = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1]]], dtype=torch.float32)
    out, _, opacity = composite(sigma, rgb, edges)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-4) and opacity.item() > 0.999


def test_sphere_bounds_and_misses():
    origins = torch.tensor([[0.0, 0.0, 4.0], [3.0, 0.0, 4.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far = sphere_bounds(origins, dirs, 1.5)
    assert torch.allclose(near[0], torch.tensor(2.5)) and torch.allclose(far[0], torch.tensor(5.5))
    assert near[1] == far[1]  # misses the sphere: an empty interval


def test_hierarchical_samples_follow_the_weights():
    edges = uniform_edges(torch.zeros(2), torch.full((2,), 10.0), 10, jitter=False)
    weights = torch.zeros(2, 10)
    weights[:, 7] = 1.0  # all mass in [7, 8]
    fine = importance_edges(edges, weights, 64, jitter=True)
    assert fine.shape == (2, 11 + 64)
    assert bool((fine[:, 1:] >= fine[:, :-1]).all())
    new = fine[(fine > 7.0) & (fine < 8.0)]
    assert new.numel() >= 2 * 60  # nearly every new sample lands in the heavy bin


def test_importance_sampler_focuses_on_foreground_pixels():
    images = torch.ones(4, 16, 16, 3)
    images[:, 6:10, 6:10] = 0.2  # an object on 1/16 of the pixels
    sampler = PixelSampler(pixel_importance(images, dilate=0), focus=0.5, generator=torch.Generator().manual_seed(0))
    idx = sampler.sample(4000)
    pix = idx % 256
    on_object = ((pix // 16 >= 6) & (pix // 16 < 10) & (pix % 16 >= 6) & (pix % 16 < 10)).float().mean()
    # Half uniform (1/16 on the object); half by importance: 16 pixels at 0.8 against 240 at the floor.
    expected = 0.5 / 16 + 0.5 * (16 * 0.8) / (16 * 0.8 + 240 * 0.01)
    assert abs(on_object - expected) < 0.03


def test_deformation_is_identity_at_time_zero_for_both_models():
    torch.manual_seed(0)
    x = torch.rand(256, 3) * 2 - 1
    for model in (DNeRF(SMALL_DNERF, 1.5), FastDNeRF(FastConfig(channels=4, spatial_res=(8,), time_res=5), 1.5)):
        for p in model.deformation.parameters():  # make sure it is not zero by initialisation
            torch.nn.init.normal_(p, std=0.5)
        zero = model.deformation(x, torch.zeros(256, 1))
        later = model.deformation(x, torch.full((256, 1), 0.5))
        assert torch.equal(zero, torch.zeros_like(zero))
        assert later.abs().mean() > 1e-3


def test_carving_keeps_the_object_and_clears_space_around_it():
    # One camera looking at a disc-shaped silhouette at the image centre.
    c2w = torch.from_numpy(look_at(torch.tensor([0.0, -4.0, 0.0]).numpy(), torch.zeros(3).numpy())).float()[None]
    alphas = torch.zeros(1, 32, 32)
    alphas[0, 12:20, 12:20] = 1.0
    focal = 40.0
    grid = carve_occupancy(c2w, alphas, torch.zeros(1), focal, bound=1.5, res=16, dilate=0)
    assert grid[0, 8, 8, 8]  # the centre projects onto the silhouette
    assert not grid[0, 8, 8, 15].item() and not grid[0, 0, 8, 8].item()  # above / beside it: background
    assert 0.02 < grid.float().mean() < 0.5


def test_render_rays_shapes_for_both_models():
    origins, dirs = camera_rays(torch.from_numpy(look_at(torch.tensor([0.0, -4.0, 1.0]).numpy(),
                                                         torch.zeros(3).numpy())).float(), 4, 4, 5.0)
    o, d, t = origins.reshape(-1, 3), dirs.reshape(-1, 3), torch.full((16,), 0.3)
    fast = FastDNeRF(FastConfig(channels=4, spatial_res=(8,), time_res=5, n_samples=16), 1.5)
    for model in (DNeRF(SMALL_DNERF, 1.5), fast):
        out = render_rays(model, o, d, t, training=True)
        assert out.rgb.shape == (16, 3) and bool(((out.rgb >= 0) & (out.rgb <= 1)).all())
        out.rgb.sum().backward()


def test_plane_regularisers_vanish_on_flat_planes_and_penalise_roughness():
    model = FastDNeRF(FastConfig(channels=2, spatial_res=(8,), time_res=6, deform_spatial_res=8,
                                 plane_tv=1.0, time_smoothness=1.0), 1.5)
    with torch.no_grad():
        for grid in [*model.canonical.grids, model.deformation.grid]:
            for plane, is_time in zip(grid.planes, grid.is_time):
                # Spatial planes constant, time planes linear in time: neither is penalised.
                ramp = torch.linspace(0.0, 1.0, plane.shape[2])[:, None] if is_time else 0.3
                plane.copy_(torch.zeros_like(plane) + ramp)
    assert model.regularisation().item() < 1e-10
    with torch.no_grad():
        model.canonical.grids[0].planes[0][0, 0, 3, 3] += 1.0  # a spike on a spatial plane
        model.deformation.grid.planes[2][0, 0, 2, 4] += 1.0  # a kink in time on a time plane
    tv, time = model.canonical.grids[0].smoothness()
    assert tv > 0.01 and time < 1e-10
    tv, time = model.deformation.grid.smoothness()
    assert tv < 1e-10 and time > 0.01


def test_dnerf_between_hull_bounds_spends_nothing_on_rays_that_miss_the_hull():
    origins, dirs = camera_rays(torch.from_numpy(look_at(torch.tensor([0.0, -4.0, 0.0]).numpy(),
                                                         torch.zeros(3).numpy())).float(), 8, 8, 6.0)
    o, d, t = origins.reshape(-1, 3), dirs.reshape(-1, 3), torch.full((64,), 0.3)
    torch.manual_seed(0)
    plain = DNeRF(SMALL_DNERF, 1.5).eval()
    hulled = DNeRF(replace(SMALL_DNERF, occupancy_res=8), 1.5).eval()
    hulled.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        # An all-free grid bounds every ray by the sphere: the same render as without a grid.
        assert torch.allclose(render_rays(hulled, o, d, t, False).rgb, render_rays(plain, o, d, t, False).rgb)
        hulled.occupancy.zero_()
        hulled.occupancy[:, 3:5, 3:5, 3:5] = True  # a small cube at the centre
        out = render_rays(hulled, o, d, t, False)
    near, far = sphere_bounds(o, d, 1.5)
    hull_near, hull_far, hit = hull_bounds(hulled, o, d, t, near, far, 64)
    assert 0 < hit.sum() < 64  # the central rays hit the cube, the outer ones miss it
    assert bool((hull_near[hit] >= near[hit]).all() and (hull_far[hit] <= far[hit]).all())
    assert bool((hull_far[hit] - hull_near[hit] < 0.5 * (far[hit] - near[hit])).all())
    # The fine pass evaluates every bin of the merged edges, the coarse ones and the new.
    assert out.n_evaluated == int(hit.sum()) * (2 * SMALL_DNERF.n_coarse + SMALL_DNERF.n_fine)
    assert torch.equal(out.rgb[~hit], torch.ones(int((~hit).sum()), 3))
