import pytest
import torch
from conftest import reference_file

from defect_gen.core.diffusion import (
    GaussianDiffusion,
    cosine_betas,
    linear_betas,
    space_timesteps,
    split_at,
    window,
    with_switch,
)


def test_cosine_schedule_matches_published():
    ref = torch.load(reference_file("schedule_cosine_1000.pt"), weights_only=True)
    betas = cosine_betas(1000)
    diffusion = GaussianDiffusion(betas)
    assert (betas.float() - ref["betas"]).abs().max() <= 1e-6
    assert (diffusion.alphas_cumprod.float() - ref["alphas_cumprod"]).abs().max() <= 1e-6


def test_linear_schedule_range():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert linear_betas(500)[-1].item() == pytest.approx(0.04)


@pytest.mark.parametrize("predict", ["x0", "eps", "v"])
def test_parameterisations_recover_x0(predict):
    d = GaussianDiffusion(cosine_betas(100), predict=predict)
    # float64: at t = T-1 alpha_bar is ~1e-9 and eps -> x0 divides by its square root
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 5, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 50, 99])
    x_t = d.q_sample(x0, t, noise)
    perfect = d.target(x0, noise, t)  # what a perfect network outputs
    torch.testing.assert_close(d.x0_from_output(perfect, x_t, t), x0, atol=1e-7, rtol=0)


def test_loss_is_zero_for_perfect_model_and_weights_mask():
    d = GaussianDiffusion(cosine_betas(100), predict="x0", mask_loss_weight=3.0)
    x0 = torch.zeros(2, 5, 4, 4)

    class Const(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x, t):
            return torch.zeros_like(x) + self.value

    t = torch.tensor([5, 60])
    assert d.training_losses(Const(0.0), x0, t)["loss"].abs().max() == 0
    out = d.training_losses(Const(1.0), x0, t)
    # rgb and mask MSE are both 1; weighted mean over 3 RGB + 2 mask channels
    assert out["loss"][0].item() == pytest.approx((3 * 1 + 3.0 * 2 * 1) / 5)


def test_space_timesteps_and_switch():
    assert space_timesteps(1000) == list(range(999, -1, -1))
    ts = space_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with_s = with_switch(ts, 400, 1000)
    assert 400 in with_s and 399 in with_s and len(with_s) == 52
    large, small = split_at(with_s, 400)
    assert min(large) == 400 and max(small) == 399
    assert with_switch(ts, 0, 1000) == ts and with_switch(ts, 1000, 1000) == ts
    assert window(1000, 0, None) == (0, 1000)
    with pytest.raises(ValueError):
        window(1000, 500, 400)


@pytest.mark.parametrize("steps,switch", [(50, 200), (10, 200), (50, 204), (1000, 200), (3, 1)])
def test_switch_hands_over_x_s_minus_1_as_the_full_chain_does(steps, switch):
    # Issue 12 item 5: with 50 steps and S = 200 the small model started at 183, not 199.
    grid = space_timesteps(1000, steps)
    large, small = split_at(with_switch(grid, switch, 1000), switch)
    assert large[-1] == switch and small[0] == switch - 1  # large: x_S -> x_{S-1}; small from x_{S-1}
    assert set(grid) <= set(large + small) and len(large + small) - len(grid) == len({switch, switch - 1} - set(grid))


def test_clean_mask_training_gives_the_mask_clean_and_learns_rgb_only():
    d = GaussianDiffusion(cosine_betas(100), predict="x0", clean_mask=True)
    x0 = torch.rand(3, 6, 8, 8) * 2 - 1
    seen = {}

    def model(x_t, t):
        seen["x_t"] = x_t
        out = x0.clone()
        out[:, 3:] += 5.0  # a wrong mask output costs nothing: the mask is the condition
        out[:, :3] += 0.5
        return out

    losses = d.training_losses(model, x0, torch.tensor([10, 50, 99]))
    assert torch.equal(seen["x_t"][:, 3:], x0[:, 3:])  # never noised
    assert not torch.allclose(seen["x_t"][:, :3], x0[:, :3])
    assert torch.allclose(losses["loss"], torch.full((3,), 0.25)) and torch.equal(losses["mse_mask"], torch.zeros(3))
