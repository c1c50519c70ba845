"""Schedules as functions of training progress ``p`` in ``[0, 1]``.

Every schedule takes ``p`` as its first argument (a float, or anything ``float()`` accepts), clips it to
``[0, 1]`` and returns a python float; a NaN ``p`` raises ``ValueError``. Use :func:`progress` to turn
``(global_step, max_steps)`` into ``p`` and :func:`get_schedule` to build a one-argument callable from a name and
keyword arguments (e.g. from a config file)::

    lam_schedule = get_schedule("linear")            # BAM teacher annealing: lambda 0 -> 1
    lam = lam_schedule(progress(state.global_step, state.max_steps))

:func:`dann` is the gradient-reversal ramp of Ganin and Lempitsky (2015); :func:`annealing_kd_factor` is the
stepwise teacher-logit scale ``Phi(T)`` of Annealing-KD (Jafari et al., 2021).
"""

from __future__ import annotations

import bisect
import functools
import inspect
import math
from collections.abc import Callable, Sequence

__all__ = [
    "progress",
    "linear",
    "cosine",
    "constant",
    "step",
    "dann",
    "annealing_kd_factor",
    "get_schedule",
    "SCHEDULES",
]


def _clip_progress(p: float) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError) as e:
        raise ValueError(f"progress p must be a number, got {p!r}") from e
    if math.isnan(value):
        raise ValueError("progress p must not be NaN")
    return min(max(value, 0.0), 1.0)


def progress(global_step: int, max_steps: int, inclusive: bool = False) -> float:
    """Training progress ``global_step / max_steps`` clipped to ``[0, 1]``; ``0.0`` if ``max_steps <= 0``.

    ``global_step`` is the number of optimizer steps done, so the loss of the last step (``global_step =
    max_steps - 1``) sees ``(max_steps - 1) / max_steps`` and a schedule never reaches its ``p = 1`` value. With
    ``inclusive=True`` the progress is ``global_step / (max_steps - 1)`` instead: ``0`` at the first step and ``1``
    at the last (``1.0`` when there is a single step)."""
    if max_steps <= 0:
        return 0.0
    if inclusive:
        return min(max(global_step / (max_steps - 1), 0.0), 1.0) if max_steps > 1 else 1.0
    return min(max(global_step / max_steps, 0.0), 1.0)


def linear(p: float, start: float = 0.0, end: float = 1.0) -> float:
    """``start + (end - start) * p``. With the defaults this is BAM's teacher-annealing lambda, rising 0 -> 1."""
    p = _clip_progress(p)
    return float(start + (end - start) * p)


def cosine(p: float, start: float = 0.0, end: float = 1.0) -> float:
    """``start + (end - start) * (1 - cos(pi * p)) / 2``: smooth ramp from ``start`` (p = 0) to ``end`` (p = 1)."""
    p = _clip_progress(p)
    return float(start + (end - start) * (1.0 - math.cos(math.pi * p)) / 2.0)


def constant(p: float, value: float = 1.0) -> float:
    """``value`` for every ``p`` (``p`` is still validated)."""
    _clip_progress(p)
    return float(value)


def _validate_step(milestones: Sequence[float], values: Sequence[float]) -> None:
    try:
        ms = [float(m) for m in milestones]
        vs = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"step: milestones and values must be sequences of numbers, got {milestones!r}, {values!r}"
        ) from e
    if len(vs) != len(ms) + 1:
        raise ValueError(
            f"step: len(values) must be len(milestones) + 1, got {len(vs)} values for {len(ms)} milestones"
        )
    for m in ms:
        if not 0.0 < m < 1.0:
            raise ValueError(f"step: milestones must lie strictly inside (0, 1), got {ms}")
    for a, b in zip(ms, ms[1:]):
        if not a < b:
            raise ValueError(f"step: milestones must be strictly increasing, got {ms}")


def step(p: float, milestones: Sequence[float], values: Sequence[float]) -> float:
    """Piecewise-constant schedule.

    ``values[0]`` for ``p < milestones[0]``, ``values[i]`` for ``milestones[i-1] <= p < milestones[i]`` and
    ``values[-1]`` for ``p >= milestones[-1]``. Requires ``len(values) == len(milestones) + 1`` and milestones
    strictly increasing inside ``(0, 1)`` (ValueError otherwise).
    """
    _validate_step(milestones, values)
    p = _clip_progress(p)
    return float(values[bisect.bisect_right([float(m) for m in milestones], p)])


def dann(p: float, gamma: float = 10.0, scale: float = 1.0) -> float:
    """``scale * (2 / (1 + exp(-gamma * p)) - 1)``: the gradient-reversal factor of DANN (Ganin and Lempitsky, 2015),
    0 at the start of training and close to ``scale`` once ``gamma * p`` is large (0.9999 × scale at p = 1 with the
    paper's ``gamma = 10``), so the adversary's noisy early gradients do not reach the encoder at full strength."""
    p = _clip_progress(p)
    if not gamma > 0:
        raise ValueError(f"dann: gamma must be > 0, got {gamma!r}")
    return float(scale * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0))


def annealing_kd_factor(p: float, max_temperature: int) -> float:
    """Teacher-logit scale ``Phi(T)`` of Annealing-KD (Jafari et al., 2021), phase 1.

    ``T = tau_max - floor(p * tau_max)`` clamped to ``[1, tau_max]`` and ``Phi(T) = 1 - (T - 1) / tau_max``, so
    ``Phi`` takes the values ``1/tau_max, 2/tau_max, ..., 1`` in ``tau_max`` equal stages of training and is 1 at
    ``p = 1``. (A tolerance of 1e-9 is added inside the floor so that a progress of e.g. ``29 / 100`` lands on the
    stage boundary despite float rounding.)

    Args:
        p: training progress, clipped to ``[0, 1]``.
        max_temperature: ``tau_max``, a positive integer.
    """
    try:
        ok = not isinstance(max_temperature, bool) and float(max_temperature).is_integer() and max_temperature >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"max_temperature must be a positive integer, got {max_temperature!r}")
    tau_max = int(max_temperature)
    p = _clip_progress(p)
    temperature = tau_max - math.floor(p * tau_max + 1e-9)
    temperature = min(max(temperature, 1), tau_max)
    return (tau_max - temperature + 1) / tau_max


SCHEDULES: dict[str, Callable[..., float]] = {
    "linear": linear,
    "cosine": cosine,
    "constant": constant,
    "step": step,
    "dann": dann,
}


def get_schedule(name: str, **kwargs) -> Callable[[float], float]:
    """Build a one-argument schedule ``f(p) -> float`` by name.

    Args:
        name: one of ``"linear"``, ``"cosine"``, ``"constant"``, ``"step"``, ``"dann"``.
        **kwargs: the schedule's keyword arguments (e.g. ``start=0.0, end=1.0`` or ``milestones=..., values=...``).

    Returns:
        ``functools.partial(SCHEDULES[name], **kwargs)``.

    Raises:
        ValueError: unknown name (the message lists the valid names), or keyword arguments the schedule does not
            accept / rejects (checked here, at construction time, by binding and evaluating the schedule at p = 0).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names are: {', '.join(sorted(SCHEDULES))}")
    fn = SCHEDULES[name]
    try:
        inspect.signature(fn).bind(0.0, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for schedule {name!r}: {e}") from e
    if name == "step":
        _validate_step(kwargs["milestones"], kwargs["values"])
        kwargs = {"milestones": tuple(kwargs["milestones"]), "values": tuple(kwargs["values"])}
    schedule = functools.partial(fn, **kwargs)
    try:
        value = schedule(0.0)
        float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad arguments for schedule {name!r}: {e}") from e
    return schedule
