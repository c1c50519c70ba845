"""Plain-Python reference formulas for the golden-value tests of the losses (lists of floats, no torch), and a helper
building float64 tensors so tolerances can be tight."""

from __future__ import annotations

import math

import torch

DT = torch.float64  # golden comparisons in double precision


def tt(x, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=DT, requires_grad=requires_grad)


def py_log_softmax(row, temperature=1.0):
    z = [x / temperature for x in row]
    m = max(z)
    lse = m + math.log(sum(math.exp(x - m) for x in z))
    return [x - lse for x in z]


def py_softmax(row, temperature=1.0):
    return [math.exp(v) for v in py_log_softmax(row, temperature)]
