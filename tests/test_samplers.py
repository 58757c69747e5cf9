"""Samplers and the two-stage hand-over, with stand-in denoisers that record what they see."""

import pytest
import torch

from defect_gen.core.diffusion import GaussianDiffusion, cosine_betas, space_timesteps, split_at, with_switch
from defect_gen.core.samplers import SAMPLERS, randn_rows, sample_ddim, sample_ddpm, two_stage_denoiser


class Recorder:
    """A stand-in network: predicts a fixed x0 and records every timestep it is called at."""

    def __init__(self, x0_value: float):
        self.value, self.seen = x0_value, []

    def __call__(self, x, t):
        self.seen.append(t)
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddpm", 50), ("ddim", 50), ("ddim", None)])
@pytest.mark.parametrize("switch", [0, 1, 400, 999, 1000])
def test_each_model_sees_only_its_own_timesteps(sampler, steps, switch):
    diffusion = GaussianDiffusion(cosine_betas(1000))
    large, small = Recorder(0.5), Recorder(-0.5)
    timesteps = with_switch(space_timesteps(1000, steps), switch, 1000)
    x = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[sampler](two_stage_denoiser(large, small, switch), x, timesteps, diffusion,
                            generator=torch.Generator().manual_seed(1))
    expect_large, expect_small = split_at(timesteps, switch)
    assert large.seen == expect_large and small.seen == expect_small
    assert all(t >= switch for t in large.seen) and all(t < switch for t in small.seen)
    if 0 < switch < 1000:  # the small model takes the same chain over from x_{S-1}, as in the full chain
        assert large.seen[-1] == switch and small.seen[0] == switch - 1
    # the chain ends at the last model's x0 prediction (t = 0 step adds no noise)
    last = small if switch > 0 else large
    torch.testing.assert_close(out, torch.full_like(out, last.value), atol=1e-4, rtol=0)
    n = len(timesteps)
    added = {switch, switch - 1} - set(space_timesteps(1000, steps)) if 0 < switch < 1000 else set()
    assert n == (1000 if steps is None else 50 + len(added))


def test_sampler_starts_from_given_xt_at_given_t():
    diffusion = GaussianDiffusion(cosine_betas(1000))
    rec = Recorder(0.25)
    x = torch.randn(1, 5, 4, 4)
    sample_ddim(rec, x, [300, 200, 100, 0], diffusion)
    assert rec.seen == [300, 200, 100, 0]
    with pytest.raises(ValueError):
        sample_ddim(rec, x, [100, 300], diffusion)


def test_ddim_eta0_deterministic_and_ddpm_noise_depends_on_seed():
    diffusion = GaussianDiffusion(cosine_betas(100))
    denoise = lambda x, t: x.clamp(-1, 1) * 0.9  # noqa: E731  a contracting stand-in
    x = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    ts = space_timesteps(100, 10)
    a = sample_ddim(denoise, x, ts, diffusion, eta=0.0)
    b = sample_ddim(denoise, x, ts, diffusion, eta=0.0)
    assert torch.equal(a, b)
    c = sample_ddpm(denoise, x, ts, diffusion, generator=torch.Generator().manual_seed(1))
    d = sample_ddpm(denoise, x, ts, diffusion, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


def test_samplers_reproduce_gaussian_data_variance():
    """For data ~ N(0, s^2) the exact x0 predictor is linear. With it, the full 1000-step chain
    must reproduce the data variance (a check of the posterior coefficients and noise scale),
    and ancestral DDPM must equal DDIM with eta = 1 step for step (same marginals, same noise)."""
    diffusion = GaussianDiffusion(cosine_betas(1000))
    s2 = 0.25

    def exact_x0(x, t):
        ab = diffusion.alpha_bar_at(t)
        return x * (ab**0.5 * s2) / (ab * s2 + 1 - ab)

    x = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = space_timesteps(1000)
    ddpm = sample_ddpm(exact_x0, x, ts, diffusion, generator=torch.Generator().manual_seed(3))
    ddim1 = sample_ddim(exact_x0, x, ts, diffusion, generator=torch.Generator().manual_seed(3), eta=1.0)
    ddim0 = sample_ddim(exact_x0, x, ts, diffusion, eta=0.0)
    torch.testing.assert_close(ddpm, ddim1, atol=1e-9, rtol=0)
    assert ddpm.var().item() == pytest.approx(s2, rel=0.04)
    assert ddim0.var().item() == pytest.approx(s2, rel=0.02)


def test_per_row_generators_make_rows_independent_of_batch():
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    like = torch.empty(3, 2, 2)
    batch = randn_rows(like, gens([7, 8, 9]))
    alone = randn_rows(like[:1], gens([8]))
    assert torch.equal(batch[1], alone[0])


def test_ddim_eta0_is_the_published_cold_diffusion_step():
    """x_{t-1} = x_t - D(x0, t) + D(x0, t-1), D(x0, s) = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps_hat."""
    from defect_gen.core.samplers import ddim_step

    diffusion = GaussianDiffusion(cosine_betas(1000))
    x = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(0))

    def denoise(x, t):
        return (0.7 * x + t / 1000).clamp(-1, 1)

    for t in (999, 500, 200, 1):
        x0 = denoise(x, t)
        ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t - 1)
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5

        def degrade(a):
            return a**0.5 * x0 + (1 - a) ** 0.5 * eps

        cold = x - degrade(ab) + degrade(ab_prev)
        torch.testing.assert_close(ddim_step(denoise, x, t, t - 1, diffusion, eta=0.0)[0], cold)


def test_clean_known_channels_reach_the_network_unnoised_at_every_step():
    from defect_gen.core.samplers import KnownRegion, known_region_sampler

    diffusion = GaussianDiffusion(cosine_betas(100))
    values = torch.rand(2, 5, 8, 8) * 2 - 1
    keep = torch.zeros(1, 5, 1, 1)
    keep[:, 3:] = 1
    inputs = []

    def denoise(x, t):
        inputs.append(x[:, 3:].clone())
        return torch.zeros_like(x)

    gen = [torch.Generator().manual_seed(i) for i in range(2)]
    x = torch.randn(2, 5, 8, 8)
    out = known_region_sampler("ddim", KnownRegion(values, keep, clean=keep))(
        denoise, x, space_timesteps(100, 5), diffusion, generator=gen)
    assert len(inputs) == 5 and all(torch.equal(m, values[:, 3:]) for m in inputs)
    assert torch.equal(out[:, 3:], values[:, 3:])
    inputs.clear()  # without `clean` the known channels go in noised, as before
    known_region_sampler("ddim", KnownRegion(values, keep))(denoise, x, space_timesteps(100, 5), diffusion,
                                                             generator=gen)
    assert not torch.equal(inputs[0], values[:, 3:])


# ---------------------------------------------------------------------------------------
# DPM-Solver++(2M) on Gaussian data, where the exact x0 and the exact ODE end point are known


def _gaussian(mu: float = 0.3, s: float = 0.5):
    """Data ~ N(mu, s^2): the exact x0 predictor, and where the probability-flow ODE that
    starts at x_T ends (each x_t stays at the same quantile of q(x_t), std sqrt(ab s^2 + 1 - ab))."""
    diffusion = GaussianDiffusion(cosine_betas(1000))

    def exact_x0(x, t):
        ab = diffusion.alpha_bar_at(t)
        return mu + (ab**0.5 * s**2) / (ab * s**2 + 1 - ab) * (x - ab**0.5 * mu)

    def ode_end(x, t_start):
        ab = diffusion.alpha_bar_at(t_start)
        return mu + (x - ab**0.5 * mu) * s / (ab * s**2 + 1 - ab) ** 0.5

    return diffusion, exact_x0, ode_end


def _rms(a, b) -> float:
    return float(((a - b) ** 2).mean().sqrt())


def test_dpmpp_2m_converges_and_beats_ddim_at_equal_steps():
    from defect_gen.core.samplers import sample_dpmpp_2m

    diffusion, exact_x0, ode_end = _gaussian()
    x = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = {}
    for steps in (5, 10, 20, 50):
        ts = space_timesteps(1000, steps)
        target = ode_end(x, ts[0])
        errors[steps] = (_rms(sample_dpmpp_2m(exact_x0, x, ts, diffusion), target),
                         _rms(sample_ddim(exact_x0, x, ts, diffusion, eta=0.0), target))
    for steps, (dpm, ddim) in errors.items():
        assert dpm < (ddim if steps == 5 else ddim / 2), (steps, dpm, ddim)
    assert errors[10][0] < errors[5][0] / 2 and errors[20][0] < errors[10][0] / 10  # second order: fast decay
    assert errors[20][0] < errors[50][1] / 5  # 20 DPM-Solver++ steps beat 50 DDIM steps


def test_dpmpp_2m_first_step_is_ddim_and_history_runs_through_the_switch():
    from defect_gen.core.samplers import DPMSolverPP2MStep, ddim_step, sample_dpmpp_2m

    diffusion, exact_x0, _ = _gaussian()
    x = torch.randn(4, 5, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(DPMSolverPP2MStep()(exact_x0, x, 999, 900, diffusion)[0],
                               ddim_step(exact_x0, x, 999, 900, diffusion, eta=0.0)[0])
    ts = with_switch(space_timesteps(1000, 12), 400, 1000)
    large, small = Recorder(0.0), Recorder(0.0)

    def recorded(rec):
        return lambda x, t: (rec(x, t), exact_x0(x, t))[1]

    two = sample_dpmpp_2m(two_stage_denoiser(recorded(large), recorded(small), 400), x, ts, diffusion)
    torch.testing.assert_close(two, sample_dpmpp_2m(exact_x0, x, ts, diffusion))  # no restart at the switch
    assert large.seen == [t for t in ts if t >= 400] and small.seen == [t for t in ts if t < 400]


def test_dpmpp_2m_in_known_region_mode_keeps_the_known_part_and_resamples():
    from defect_gen.core.samplers import KnownRegion, known_region_sampler

    diffusion, exact_x0, _ = _gaussian()
    values = torch.rand(2, 5, 4, 4, dtype=torch.float64) * 2 - 1
    keep = torch.zeros_like(values)
    keep[:, 3:] = 1
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    x = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for resample in (1, 3):
        out = known_region_sampler("dpmpp_2m", KnownRegion(values, keep), jump_length=3, resample=resample)(
            exact_x0, x, space_timesteps(1000, 15), diffusion, generator=gens)
        torch.testing.assert_close(out[keep.bool()], values[keep.bool()])
        assert torch.isfinite(out).all()


def test_dpmpp_2m_refuses_bad_arguments():
    from defect_gen.core.samplers import make_step, sample_dpmpp_2m

    diffusion, exact_x0, _ = _gaussian()
    x = torch.zeros(1, 5, 2, 2)
    with pytest.raises(ValueError, match="strictly descending"):
        sample_dpmpp_2m(exact_x0, x, [100, 300], diffusion)
    with pytest.raises(ValueError, match="eta must be 0"):
        sample_dpmpp_2m(exact_x0, x, [300, 100], diffusion, eta=0.5)
    with pytest.raises(ValueError, match=r"timestep 1000 is outside \[0, 1000\)"):
        sample_dpmpp_2m(exact_x0, x, [1000, 10], diffusion)
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        make_step("dpm")
