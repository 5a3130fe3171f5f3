"""Samplers on velocity fields with closed-form solutions (integrating from t = 1 to t = 0)."""
import math

import pytest
import torch

from rpfm.samplers import euler, heun, sample, time_grid


def _linear_field(a: float):
    # dx/dt = a * x  =>  x(0) = x(1) * exp(-a)
    return lambda x, t: a * x


def _time_field(x, t):
    # dx/dt = 3 t^2  =>  x(0) = x(1) - 1
    return torch.full_like(x, 3.0) * t.to(x.dtype) ** 2


def test_grid():
    ts = time_grid(4)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_euler_closed_form_iterate():
    # Euler on dx/dt = a x with dt = -1/N gives x_N = x_1 (1 - a/N)^N exactly.
    x1 = torch.randn(3, dtype=torch.float64)
    res = euler(_linear_field(0.7), x1, num_steps=10)
    torch.testing.assert_close(res.x0, x1 * (1 - 0.07) ** 10)
    assert res.nfe == 10


def test_convergence_orders():
    x1 = torch.ones(1, dtype=torch.float64)
    exact = math.exp(-1.3)

    def err(method, n):
        return abs(method(_linear_field(1.3), x1, num_steps=n).x0.item() - exact)

    euler_ratio = err(euler, 20) / err(euler, 40)
    heun_ratio = err(heun, 20) / err(heun, 40)
    assert 1.8 < euler_ratio < 2.2          # first order
    assert 3.6 < heun_ratio < 4.4           # second order


def test_heun_is_exact_on_quadratic_time_field_up_to_trapezoid_error():
    x1 = torch.zeros(2, dtype=torch.float64)
    res = heun(_time_field, x1, num_steps=8)
    # trapezoid rule on 3t^2 over [0,1] with h = 1/8 overestimates by h^2/2 = 1/128
    torch.testing.assert_close(res.x0, torch.full((2,), -1.0 - 1 / 128, dtype=torch.float64), rtol=0, atol=1e-9)
    assert res.nfe == 16


def test_dopri5_accuracy_and_nfe_formula():
    x1 = torch.randn(4, dtype=torch.float64)
    res = sample(_linear_field(0.9), x1, solver="dopri5", atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(res.x0, x1 * math.exp(-0.9), rtol=1e-6, atol=1e-7)
    assert res.nfe > 2 and (res.nfe - 2) % 6 == 0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(solver="rk4"), ValueError, "unknown solver 'rk4'"),
    (dict(num_steps=0), ValueError, "num_steps: expected an int >= 1"),
    (dict(num_steps=2.5), TypeError, "num_steps"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample(_linear_field(1.0), torch.ones(1), **kwargs)
