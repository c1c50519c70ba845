"""What every loss checks first: temperatures, scalars, logits, labels and masks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _HALF_DTYPES else x


def _check_temperature(temperature: float | Tensor) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}") from e
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def _check_scalar(value: float | Tensor, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a python number or a single-element tensor, got shape {tuple(value.shape)}"
            )
        value = value.detach().reshape(()).item()
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number, got {value!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _check_lam(lam: float | Tensor) -> float:
    v = _check_scalar(lam, "lam")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {v}")
    return v


def _check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 1:
        raise ValueError(f"{name} must have a class dimension (at least 1-D), got a 0-d tensor")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")


def _check_same_shape(student_logits: Tensor, teacher_logits: Tensor, teacher_name: str = "teacher_logits") -> None:
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, teacher_name)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"shape mismatch: student_logits has shape {tuple(student_logits.shape)} but {teacher_name} has shape "
            f"{tuple(teacher_logits.shape)}"
        )


def _check_labels(labels: Tensor, logits: Tensor, logits_name: str = "logits") -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: labels has shape {tuple(labels.shape)} but {logits_name} has shape "
            f"{tuple(logits.shape)}; labels must have shape {logits_name}.shape[:-1] = {tuple(logits.shape[:-1])}"
        )


def _check_label_range(labels: Tensor, mask: Tensor, num_classes: int) -> None:
    """A clear error for labels outside ``[0, C)``. On an accelerator the check is asynchronous (no host-device
    synchronisation per call): a bad label fails the next synchronisation with a device-side assertion. The trainers
    check every label of their datasets before training, so there it cannot fire."""
    bad = mask & ((labels < 0) | (labels >= num_classes))
    if labels.device.type != "cpu":
        torch._assert_async(~bad.any(), f"labels must be in [0, {num_classes}) or equal to ignore_index")
        return
    if bool(bad.any()):
        offending = labels[bad].unique()[:10].tolist()
        raise ValueError(
            f"labels must be in [0, {num_classes}) or equal to ignore_index; got out-of-range values {offending}"
        )


def _check_mask(mask: Tensor | None, logits: Tensor, logits_name: str = "logits") -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: mask has shape {tuple(mask.shape)} but {logits_name} has shape {tuple(logits.shape)}; "
            f"mask must have shape {logits_name}.shape[:-1] = {tuple(logits.shape[:-1])}"
        )
    return mask.to(device=logits.device, dtype=torch.bool)
