"""Timestep sequences: respacing, training windows, and the two-stage split.

Samplers run over any descending sequence of original timesteps, so respacing needs no new
schedule: a step from t to t_prev simply uses alpha_bar[t] and alpha_bar[t_prev]. Keeping
original units everywhere is what keeps the large/small switch at the same noise level
whatever the number of steps.
"""

from __future__ import annotations


def space_timesteps(num_timesteps: int, steps: int | None = None) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (both included), descending.

    None or steps >= T gives every timestep.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps is None or steps >= num_timesteps:
        return list(range(num_timesteps - 1, -1, -1))
    if steps == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)}, reverse=True)


def with_switch(timesteps: list[int], switch: int, num_timesteps: int) -> list[int]:
    """Add S and S-1 to the grid so that the hand-over is the full chain's.

    The large model serves t >= S and the small one t < S. In the full chain the large
    model's last step goes from x_S to x_{S-1} and the small model continues from x_{S-1}.
    A respaced grid rarely holds both; without them the large model would stop above S or
    hand over a state further down (x_183 for 50 steps and S = 200). So both are inserted
    where missing: a grid of N steps becomes N, N+1 or N+2 (`sample` reports the count).
    S = 0 (large only) and S = T (small only) change nothing.
    """
    if 0 < switch < num_timesteps:
        timesteps = sorted(set(timesteps) | {switch, switch - 1}, reverse=True)
    return timesteps


def split_at(timesteps: list[int], switch: int) -> tuple[list[int], list[int]]:
    """(steps for the large model: t >= switch, steps for the small one: t < switch)."""
    return [t for t in timesteps if t >= switch], [t for t in timesteps if t < switch]


def window(num_timesteps: int, t_min: int = 0, t_max: int | None = None) -> tuple[int, int]:
    """The training window [t_min, t_max) with None meaning T."""
    t_max = num_timesteps if t_max is None else t_max
    if not 0 <= t_min < t_max <= num_timesteps:
        raise ValueError(f"need 0 <= t_min < t_max <= {num_timesteps}, got [{t_min}, {t_max})")
    return t_min, t_max
