"""Calibration of an LLM classifier's class distribution: contextual calibration and temperature scaling.

Both are pure functions of class log-probabilities ``(N, C)`` (any real scores work: they are renormalised with
``log_softmax`` first).

**Contextual calibration** (Zhao et al., 2021, "Calibrate Before Use"). A prompted LM prefers some label words
whatever the input (their prior frequency, the last demonstration's label, ...). That bias is estimated by the class
distribution the same prompt gives for *content-free* inputs such as ``"N/A"``, ``""`` and ``"[MASK]"``, averaged::

    p_cf = mean_m softmax(z_cf_m)                     (C,)
    p_calibrated(c | x) = (p(c | x) / p_cf(c)) / sum_c' (p(c' | x) / p_cf(c'))

i.e. ``log p_calibrated = log_softmax(log p - log p_cf)`` (the paper's ``W = diag(p_cf)^-1``, ``b = 0``). A content-free
input then gets the uniform distribution.

**Temperature scaling** (Guo et al., 2017) fitted on a small labelled dev set: ``T`` minimises the negative
log-likelihood ``NLL(T) = -mean_i log softmax(z_i / T)[y_i]``. With ``beta = 1 / T`` the NLL is convex in ``beta`` (a
log-sum-exp of linear functions minus a linear one), and its derivative
``mean_i (E_{softmax(beta z_i)}[z_i] - z_i[y_i])`` is increasing, so the minimiser is its root, found here by bisection
(to float64 precision), then ``T = 1 / beta``: the same minimiser as a search over ``log T``. When the dev set is
separated with a margin the NLL keeps decreasing as ``T -> 0`` (and as ``T -> inf`` when the scores are anti-correlated
with the labels); ``T`` is then clipped to ``bounds`` with a warning.

Example::

    p_cf = content_free_distribution(classifier.class_log_probs(["N/A", "", "[MASK]"]))
    calibrated = contextual_calibration(log_probs, p_cf)
    temperature = fit_temperature(contextual_calibration(dev_log_probs, p_cf), dev_labels)
    teacher_logits = apply_temperature(calibrated, temperature)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONTENT_FREE_INPUTS",
    "apply_temperature",
    "content_free_distribution",
    "contextual_calibration",
    "fit_temperature",
    "temperature_nll",
]

DEFAULT_CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
"""The content-free inputs of Zhao et al. (2021)."""


def _as_log_probs(scores: Tensor, name: str) -> Tensor:
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 2 or scores.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} hold NaN or inf")
    return torch.log_softmax(scores, dim=-1)


def content_free_distribution(content_free_log_probs: Tensor) -> Tensor:
    """``p_cf``: the mean class distribution ``(C,)`` of the content-free inputs' class log-probabilities ``(M, C)``
    (float64, sums to 1)."""
    log_p = _as_log_probs(content_free_log_probs, "content_free_log_probs")
    if log_p.shape[0] < 1:
        raise ValueError("need at least one content-free input")
    return log_p.exp().mean(0)


def contextual_calibration(log_probs: Tensor, p_cf: Tensor) -> Tensor:
    """``log_softmax(log p - log p_cf)``: the class log-probabilities ``(N, C)`` divided by the content-free
    distribution ``p_cf`` ``(C,)`` (from :func:`content_free_distribution`) and renormalised. Returns float64.

    Raises:
        ValueError: shapes differ, or ``p_cf`` has a zero or non-finite entry.
    """
    log_p = _as_log_probs(log_probs, "log_probs")
    p_cf = torch.as_tensor(p_cf, dtype=torch.float64).reshape(-1)
    if p_cf.shape[0] != log_p.shape[-1]:
        raise ValueError(f"p_cf has {p_cf.shape[0]} classes, log_probs {log_p.shape[-1]}")
    if not (torch.isfinite(p_cf).all() and (p_cf > 0).all()):
        raise ValueError(f"p_cf must be finite and positive, got {p_cf.tolist()}")
    return torch.log_softmax(log_p - p_cf.log(), dim=-1)


def apply_temperature(log_probs: Tensor, temperature: float) -> Tensor:
    """``log_softmax(log_probs / T)`` (float64)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    return torch.log_softmax(_as_log_probs(log_probs, "log_probs") / temperature, dim=-1)


def _check_labels(labels: Sequence[int] | Tensor, n: int, c: int) -> Tensor:
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} rows")
    if n == 0:
        raise ValueError("fitting a temperature needs at least one labelled example")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}); got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def temperature_nll(log_probs: Tensor, labels: Sequence[int] | Tensor, temperature: float) -> float:
    """The mean negative log-likelihood of ``labels`` under ``softmax(log_probs / T)``."""
    scaled = apply_temperature(log_probs, temperature)
    y = _check_labels(labels, scaled.shape[0], scaled.shape[1])
    return float(-scaled.gather(1, y[:, None]).mean())


def fit_temperature(
    log_probs: Tensor,
    labels: Sequence[int] | Tensor,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    tol: float = 1e-12,
) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the NLL of ``labels`` under ``softmax(log_probs / T)``.

    Args:
        log_probs: class log-probabilities (or any scores) ``(N, C)`` of the labelled dev examples.
        labels: their class ids ``(N,)`` (no ``-100``: drop unlabelled rows first).
        bounds: the range of ``T``; a minimiser outside it is clipped (with a warning).
        tol: bisection stops when the bracket on ``beta = 1/T`` is narrower than ``tol * beta``.

    Returns:
        ``T`` as a float (``T > 1`` softens an over-confident LLM, ``T < 1`` sharpens it).
    """
    z = _as_log_probs(log_probs, "log_probs")
    y = _check_labels(labels, z.shape[0], z.shape[1])
    low_t, high_t = bounds
    if not 0 < low_t < high_t:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    z_true = z.gather(1, y[:, None]).squeeze(1)

    def slope(beta: float) -> float:  # d NLL / d beta; increasing in beta
        p = torch.softmax(beta * z, dim=-1)
        return float(((p * z).sum(-1) - z_true).mean())

    lo, hi = 1.0 / high_t, 1.0 / low_t  # beta range
    if slope(lo) >= 0:
        if slope(lo) > 0:
            logger.warning("The dev-set NLL is smallest at T >= %s (the scores barely predict the labels); T = %s.",
                           high_t, high_t)
        return float(high_t)
    if slope(hi) <= 0:
        logger.warning("The dev-set NLL keeps decreasing as T -> 0 (the dev set is separated); T = %s.", low_t)
        return float(low_t)
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
    return float(1.0 / (0.5 * (lo + hi)))
