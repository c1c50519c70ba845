"""Golden-value tests for distil_trainers.schedules (expected values worked out by hand in the comments)."""

from __future__ import annotations

import functools
import math

import pytest

from distil_trainers.schedules import (
    SCHEDULES,
    annealing_kd_factor,
    constant,
    cosine,
    get_schedule,
    linear,
    progress,
    step,
)

# (1 - cos(pi/4)) / 2 = (1 - 0.7071067811865476) / 2 = 0.1464466094067262
COS_QUARTER = 0.1464466094067262


@pytest.mark.parametrize(
    "fn,kwargs,expected",  # expected values at p = 0, 0.25, 0.5, 1
    [
        (linear, {}, [0.0, 0.25, 0.5, 1.0]),
        (linear, {"start": 1.0, "end": 0.2}, [1.0, 0.8, 0.6, 0.2]),  # 1 - 0.8 p
        (cosine, {}, [0.0, COS_QUARTER, 0.5, 1.0]),
        # 2 + (6 - 2) * [0, 0.14644661, 0.5, 1] = [2, 2.58578644, 4, 6]
        (cosine, {"start": 2.0, "end": 6.0}, [2.0, 2.0 + 4 * COS_QUARTER, 4.0, 6.0]),
        (constant, {}, [1.0, 1.0, 1.0, 1.0]),
        (constant, {"value": 0.7}, [0.7, 0.7, 0.7, 0.7]),
        # milestones 0.25, 0.5: [0, .25) -> 1, [.25, .5) -> 2, [.5, 1] -> 3
        (step, {"milestones": [0.25, 0.5], "values": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0, 3.0]),
    ],
)
def test_values_at_fixed_progress(fn, kwargs, expected):
    for p, want in zip([0.0, 0.25, 0.5, 1.0], expected):
        got = fn(p, **kwargs)
        assert isinstance(got, float)
        assert got == pytest.approx(want, abs=1e-12)
    # p is clipped to [0, 1]
    assert fn(-3.0, **kwargs) == pytest.approx(expected[0], abs=1e-12)
    assert fn(7.5, **kwargs) == pytest.approx(expected[-1], abs=1e-12)


@pytest.mark.parametrize("fn", [linear, cosine])
def test_linear_and_cosine_monotonic(fn):
    values = [fn(i / 100) for i in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))
    decreasing = [fn(i / 100, start=1.0, end=0.0) for i in range(101)]
    assert all(b < a for a, b in zip(decreasing, decreasing[1:]))


def test_cosine_differs_from_linear():
    assert cosine(0.25) == pytest.approx(COS_QUARTER)
    assert abs(cosine(0.25) - linear(0.25)) > 0.1


def test_step_boundaries():
    kw = {"milestones": (0.3, 0.6, 0.9), "values": (10, 20, 30, 40)}
    assert step(0.0, **kw) == 10.0
    assert step(0.2999, **kw) == 10.0
    assert step(0.3, **kw) == 20.0  # a milestone starts the next interval
    assert step(0.5999, **kw) == 20.0
    assert step(0.6, **kw) == 30.0
    assert step(0.9, **kw) == 40.0
    assert step(1.0, **kw) == 40.0
    assert step(0.5, milestones=[], values=[5.0]) == 5.0


@pytest.mark.parametrize(
    "milestones,values,match",
    [
        ([0.5], [1.0], "len"),
        ([0.5], [1.0, 2.0, 3.0], "len"),
        ([0.6, 0.4], [1.0, 2.0, 3.0], "strictly increasing"),
        ([0.4, 0.4], [1.0, 2.0, 3.0], "strictly increasing"),
        ([0.0, 0.5], [1.0, 2.0, 3.0], r"\(0, 1\)"),
        ([0.5, 1.0], [1.0, 2.0, 3.0], r"\(0, 1\)"),
    ],
)
def test_step_validation(milestones, values, match):
    with pytest.raises(ValueError, match=match):
        step(0.5, milestones, values)
    with pytest.raises(ValueError, match=match):
        get_schedule("step", milestones=milestones, values=values)  # at construction time


@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (linear, {}),
        (cosine, {}),
        (constant, {}),
        (step, {"milestones": [0.5], "values": [0.0, 1.0]}),
        (annealing_kd_factor, {"max_temperature": 4}),
    ],
)
def test_nan_progress_raises(fn, kwargs):
    with pytest.raises(ValueError, match="NaN"):
        fn(float("nan"), **kwargs)


@pytest.mark.parametrize(
    "p,expected",
    # tau_max = 4: T = 4 - floor(4 p) clamped to [1, 4]; Phi = 1 - (T - 1) / 4
    [
        (0.0, 0.25),  # T = 4 -> 1 - 3/4
        (0.1, 0.25),  # floor(0.4) = 0 -> T = 4
        (0.25, 0.5),  # floor(1.0) = 1 -> T = 3 -> 1 - 2/4
        (0.3, 0.5),  # floor(1.2) = 1 -> T = 3
        (0.5, 0.75),  # floor(2.0) = 2 -> T = 2 -> 1 - 1/4
        (0.74, 0.75),  # floor(2.96) = 2 -> T = 2
        (0.75, 1.0),  # floor(3.0) = 3 -> T = 1 -> 1
        (0.99, 1.0),  # floor(3.96) = 3 -> T = 1
        (1.0, 1.0),  # floor(4) = 4 -> T = 0, clamped to 1
        (-0.5, 0.25),  # clipped to p = 0
        (2.0, 1.0),  # clipped to p = 1
    ],
)
def test_annealing_kd_factor_tau4(p, expected):
    assert annealing_kd_factor(p, 4) == pytest.approx(expected, abs=1e-12)


def test_annealing_kd_factor_stages():
    # tau_max equal stages with values 1/tau, 2/tau, ..., 1
    values = [annealing_kd_factor(i / 1000, 5) for i in range(1001)]
    assert sorted(set(values)) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert annealing_kd_factor(0.7, 1) == 1.0  # tau_max = 1: no annealing
    # stage boundary despite float rounding: 0.29 * 100 = 28.999999999999996 in floating point
    # T = 100 - 29 = 71 -> Phi = 1 - 70/100 = 0.30
    assert annealing_kd_factor(progress(29, 100), 100) == pytest.approx(0.30)


@pytest.mark.parametrize("tau", [0, -2, 2.5, True, "4"])
def test_annealing_kd_factor_bad_max_temperature(tau):
    with pytest.raises(ValueError, match="max_temperature"):
        annealing_kd_factor(0.5, tau)


@pytest.mark.parametrize(
    "global_step,max_steps,expected",
    [
        (0, 100, 0.0),
        (25, 100, 0.25),
        (50, 200, 0.25),
        (100, 100, 1.0),
        (150, 100, 1.0),
        (-5, 10, 0.0),
        (5, 0, 0.0),
        (5, -1, 0.0),
    ],
)
def test_progress(global_step, max_steps, expected):
    assert progress(global_step, max_steps) == expected


def test_get_schedule_builds_partials():
    assert set(SCHEDULES) == {"linear", "cosine", "constant", "step", "dann"}
    lin = get_schedule("linear", start=0.2, end=0.8)
    assert isinstance(lin, functools.partial)
    assert lin(0.5) == pytest.approx(0.5)  # 0.2 + 0.6 * 0.5
    assert get_schedule("linear")(0.25) == pytest.approx(0.25)
    assert get_schedule("cosine")(0.25) == pytest.approx(COS_QUARTER)
    assert get_schedule("constant", value=3.0)(0.9) == 3.0
    milestones = [0.5]
    st = get_schedule("step", milestones=milestones, values=[0.0, 1.0])
    milestones.append(0.9)  # later mutation of the caller's list does not affect the schedule
    assert st(0.49) == 0.0 and st(0.5) == 1.0 and st(1.0) == 1.0


@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize(("gamma", "scale"), [(10.0, 1.0), (5.0, 0.3)])
def test_dann_ramp_is_a_scaled_tanh(p, gamma, scale):
    # 2 / (1 + e^-x) - 1 = tanh(x / 2): an independent form of Ganin and Lempitsky's lambda_p
    assert get_schedule("dann", gamma=gamma, scale=scale)(p) == pytest.approx(scale * math.tanh(gamma * p / 2))


def test_dann_ramp_hand_values_and_checks():
    assert get_schedule("dann")(0.0) == 0.0
    # p = 0.1, gamma = 10: 2 / (1 + e^-1) - 1 = 2 / 1.3678794 - 1 = 0.4621172
    assert get_schedule("dann")(0.1) == pytest.approx(0.4621172, abs=1e-7)
    assert get_schedule("dann")(2.0) == get_schedule("dann")(1.0)  # progress is clipped
    with pytest.raises(ValueError, match="gamma"):
        get_schedule("dann", gamma=0.0)


def test_get_schedule_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown schedule 'exp'.*constant, cosine, dann, linear, step"):
        get_schedule("exp")


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("linear", {"foo": 1.0}),
        ("cosine", {"p": 0.5}),
        ("step", {"milestones": [0.5]}),  # missing values
        ("step", {"milestones": [0.5], "values": [1.0]}),  # wrong lengths
        ("constant", {"value": "high"}),
        ("linear", {"start": "a"}),
    ],
)
def test_get_schedule_bad_kwargs_fail_at_construction(name, kwargs):
    with pytest.raises(ValueError, match=f"schedule '{name}'|step:"):
        get_schedule(name, **kwargs)
