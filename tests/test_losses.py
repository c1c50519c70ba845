"""Golden-value tests for distil_trainers.losses.

Every expectation is computed independently of the implementation: either literal numbers worked out by hand
(arithmetic shown in the comments) or the plain-python reference formulas below, which loop over python lists of
floats with ``math.exp`` / ``math.log`` and never call torch.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import DT, py_log_softmax, py_softmax, tt

from distil_trainers.losses import (
    IGNORE_INDEX,
    annealing_targets,
    cross_entropy_loss,
    kd_kl_loss,
    label_mask,
    logits_mse_loss,
    reduce_per_item,
    soft_target_cross_entropy,
    teacher_annealing_loss,
)

# ----------------------------------------------------------------------------------------------------------------
# plain-python reference formulas (lists of floats, no torch)
# ----------------------------------------------------------------------------------------------------------------


def py_ce(s, y):
    return -py_log_softmax(s)[y]


def py_soft_ce(s, target, temperature=1.0):
    return -sum(q * ls for q, ls in zip(target, py_log_softmax(s, temperature)) if q != 0)


def py_kl(p, log_q):
    """KL(p || q) = sum_c p_c (log p_c - log q_c), skipping p_c == 0."""
    return sum(pc * (math.log(pc) - lq) for pc, lq in zip(p, log_q) if pc > 0)


def py_kd(s, t, temperature):
    return temperature**2 * py_kl(py_softmax(t, temperature), py_log_softmax(s, temperature))


def py_ta_target(t, y, lam, temperature):
    return [lam * (1.0 if c == y else 0.0) + (1 - lam) * p for c, p in enumerate(py_softmax(t, temperature))]


def py_ta(s, t, y, lam, temperature):
    return py_soft_ce(s, py_ta_target(t, y, lam, temperature), 1.0)


def py_mse(s, t, scale):
    return sum((a - scale * b) ** 2 for a, b in zip(s, t)) / len(s)


def py_mean(values):
    return sum(values) / len(values)


# ----------------------------------------------------------------------------------------------------------------
# shared data: 5 items x 4 classes, item 1 masked out with large (finite) logits
# ----------------------------------------------------------------------------------------------------------------
S5 = [
    [0.5, -1.0, 2.0, 0.3],
    [1e4, -1e4, 5e3, -3e3],  # masked
    [-2.0, 0.4, 1.1, 3.0],
    [0.9, 0.9, -1.3, 0.6],
    [1.5, 0.2, -0.7, 0.0],
]
T5 = [
    [1.0, -0.5, 0.8, 0.0],
    [-1e4, 1e4, -2e3, 7e3],  # masked
    [0.1, 0.2, 0.3, 0.4],
    [-1.0, 1.5, 0.0, 2.5],
    [2.0, -1.0, 0.5, 0.3],
]
Y5 = [2, IGNORE_INDEX, 3, 1, 0]
VALID5 = [i for i, y in enumerate(Y5) if y != IGNORE_INDEX]

# Each case: torch call (student, teacher, labels, num_items_in_batch) -> loss, and the plain-python per-item
# reference (student_row, teacher_row, label) -> float. Label-free losses get mask=label_mask(labels).
LOSS_CASES = {
    "ce": (
        lambda s, t, y, n: cross_entropy_loss(s, y, num_items_in_batch=n),
        lambda s, t, y: py_ce(s, y),
    ),
    "soft_ce_T1": (
        lambda s, t, y, n: soft_target_cross_entropy(s, torch.softmax(t, -1), 1.0, label_mask(y), n),
        lambda s, t, y: py_soft_ce(s, py_softmax(t), 1.0),
    ),
    "soft_ce_T2": (
        lambda s, t, y, n: soft_target_cross_entropy(s, torch.softmax(t, -1), 2.0, label_mask(y), n),
        lambda s, t, y: py_soft_ce(s, py_softmax(t), 2.0),
    ),
    "kd_T1": (
        lambda s, t, y, n: kd_kl_loss(s, t, 1.0, label_mask(y), n),
        lambda s, t, y: py_kd(s, t, 1.0),
    ),
    "kd_T2": (
        lambda s, t, y, n: kd_kl_loss(s, t, 2.0, label_mask(y), n),
        lambda s, t, y: py_kd(s, t, 2.0),
    ),
    "kd_T4": (
        lambda s, t, y, n: kd_kl_loss(s, t, 4.0, label_mask(y), n),
        lambda s, t, y: py_kd(s, t, 4.0),
    ),
    "ta_lam0.3_T1": (
        lambda s, t, y, n: teacher_annealing_loss(s, t, y, 0.3, 1.0, num_items_in_batch=n),
        lambda s, t, y: py_ta(s, t, y, 0.3, 1.0),
    ),
    "ta_lam0.6_T4": (
        lambda s, t, y, n: teacher_annealing_loss(s, t, y, 0.6, 4.0, num_items_in_batch=n),
        lambda s, t, y: py_ta(s, t, y, 0.6, 4.0),
    ),
    "mse_scale0.5": (
        lambda s, t, y, n: logits_mse_loss(s, t, 0.5, label_mask(y), n),
        lambda s, t, y: py_mse(s, t, 0.5),
    ),
}
CASE_IDS = list(LOSS_CASES)


# ----------------------------------------------------------------------------------------------------------------
# label_mask / reduce_per_item
# ----------------------------------------------------------------------------------------------------------------
def test_label_mask():
    m = label_mask(torch.tensor([[0, -100, 3], [-100, -100, 1]]))
    assert m.dtype == torch.bool
    assert m.tolist() == [[True, False, True], [False, False, True]]
    assert label_mask(torch.tensor([0, 5, 5]), ignore_index=5).tolist() == [True, False, False]


def test_reduce_per_item_mean_sum_and_num_items():
    x = tt([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor([True, False, True, False])
    assert reduce_per_item(x).item() == pytest.approx(10 / 4)  # (1+2+3+4)/4
    assert reduce_per_item(x, mask).item() == pytest.approx(4 / 2)  # (1+3)/2
    assert reduce_per_item(x, mask, 8).item() == pytest.approx(4 / 8)  # (1+3)/8, global count
    assert reduce_per_item(x, mask, torch.tensor(8)).item() == pytest.approx(0.5)  # int64 0-d tensor
    assert reduce_per_item(x, mask, torch.tensor([8.0])).item() == pytest.approx(0.5)  # 1-element tensor
    assert reduce_per_item(x, None, 5).item() == pytest.approx(10 / 5)
    assert reduce_per_item(x, torch.tensor([1, 0, 1, 0])).item() == pytest.approx(2.0)  # 0/1 mask accepted


def test_reduce_per_item_masked_inf_nan_do_not_leak():
    x = tt([1.0, float("inf"), 3.0, float("nan")], requires_grad=True)
    mask = torch.tensor([True, False, True, False])
    out = reduce_per_item(x, mask)
    assert out.item() == pytest.approx(2.0)
    out.backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.5, 0.0]


def test_reduce_per_item_all_masked_is_zero_and_differentiable():
    x = tt([1.0, float("inf")], requires_grad=True)
    for n in (None, 4):
        x.grad = None
        out = reduce_per_item(x, torch.tensor([False, False]), n)
        assert out.item() == 0.0
        out.backward()
        assert x.grad.tolist() == [0.0, 0.0]


def test_reduce_per_item_errors():
    with pytest.raises(ValueError, match=r"mask has shape \(3,\).*per_item has shape \(4,\)"):
        reduce_per_item(tt([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, True, False]))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        reduce_per_item(tt([1.0, 2.0]), None, torch.tensor([1, 2]))


# ----------------------------------------------------------------------------------------------------------------
# hand-computed literals, batch of 1
# ----------------------------------------------------------------------------------------------------------------
def test_cross_entropy_literal():
    # -log softmax([1,2,3])[2] = log(e^1 + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2)
    #                          = log(1 + 0.36787944 + 0.13533528) = log(1.50321472) = 0.40760596
    loss = cross_entropy_loss(tt([[1.0, 2.0, 3.0]]), torch.tensor([2]))
    assert loss.item() == pytest.approx(0.4076059644443804, rel=1e-12)


@pytest.mark.parametrize("temperature,logits", [(1.0, [0.0, math.log(3.0)]), (2.0, [0.0, 2 * math.log(3.0)])])
def test_soft_target_ce_literal(temperature, logits):
    # logits / T = [0, ln 3] in both cases -> softmax = [1/4, 3/4]; target [1/2, 1/2]
    # loss = -(0.5 ln 0.25 + 0.5 ln 0.75) = 0.5 * (1.38629436 + 0.28768207) = 0.83698822
    loss = soft_target_cross_entropy(tt([logits]), tt([[0.5, 0.5]]), temperature)
    assert loss.item() == pytest.approx(0.8369882167858358, rel=1e-12)


@pytest.mark.parametrize(
    "temperature,expected",
    [
        # T=1: p_t = softmax([ln 3, 0]) = [3/4, 1/4], p_s = [1/2, 1/2]
        #      KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.75*0.40546511 - 0.25*0.69314718 = 0.13081204
        (1.0, 0.13081203594113697),
        # T=2: p_t = softmax([ln 3 / 2, 0]) = [sqrt3/(1+sqrt3), 1/(1+sqrt3)] = [0.63397460, 0.36602540], p_s uniform
        #      KL = 0.63397460 ln(1.26794919) + 0.36602540 ln(0.73205081) = 0.15048... - 0.11414... = 0.03634078
        #      T^2 * KL = 4 * 0.03634078 = 0.14536313
        (2.0, 0.14536313148189411),
    ],
)
def test_kd_kl_literal(temperature, expected):
    loss = kd_kl_loss(tt([[0.0, 0.0]]), tt([[math.log(3.0), 0.0]]), temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_teacher_annealing_literal():
    # student [0, ln 3] -> log p_s = [ln 1/4, ln 3/4]; teacher [ln 3, 0] at T=1 -> p_t = [3/4, 1/4]; label 1, lam 0.3
    # target = 0.3 * [0, 1] + 0.7 * [0.75, 0.25] = [0.525, 0.475]
    # loss = -(0.525 ln 0.25 + 0.475 ln 0.75) = 0.525*1.38629436 + 0.475*0.28768207 = 0.72780454 + 0.13664898 = 0.86445352
    loss = teacher_annealing_loss(tt([[0.0, math.log(3.0)]]), tt([[math.log(3.0), 0.0]]), torch.tensor([1]), 0.3)
    assert loss.item() == pytest.approx(0.8644535240025385, rel=1e-12)
    targets = annealing_targets(torch.tensor([1]), tt([[math.log(3.0), 0.0]]), 0.3)
    assert targets.tolist()[0] == pytest.approx([0.525, 0.475], rel=1e-12)


def test_logits_mse_literal():
    # s = [1, 2, 3], t = [2, 2, 2], scale 0.5 -> s - 0.5 t = [0, 1, 2] -> mean of squares (0 + 1 + 4) / 3 = 5/3
    s, t = tt([[1.0, 2.0, 3.0]]), tt([[2.0, 2.0, 2.0]])
    assert logits_mse_loss(s, t, 0.5).item() == pytest.approx(5 / 3, rel=1e-12)
    assert logits_mse_loss(s, t, torch.tensor(0.5)).item() == pytest.approx(5 / 3, rel=1e-12)
    # scale 1: [-1, 0, 1] -> 2/3 (so a missing scale would be caught)
    assert logits_mse_loss(s, t).item() == pytest.approx(2 / 3, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# generic golden tests over all losses
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASE_IDS)
def test_batch_of_one_matches_reference(name):
    fn, ref = LOSS_CASES[name]
    s, t, y = S5[3], T5[3], Y5[3]
    loss = fn(tt([s]), tt([t]), torch.tensor([y]), None)
    assert loss.item() == pytest.approx(ref(s, t, y), rel=1e-10)


@pytest.mark.parametrize("name", CASE_IDS)
def test_masked_item_changes_neither_value_nor_gradient(name):
    fn, ref = LOSS_CASES[name]
    s = tt(S5, requires_grad=True)
    t = tt(T5, requires_grad=True)
    loss = fn(s, t, torch.tensor(Y5), None)
    # golden: mean over the 4 valid items of the plain-python per-item loss
    expected = py_mean([ref(S5[i], T5[i], Y5[i]) for i in VALID5])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # masked row gets exactly zero gradient
    assert t.grad is None  # teacher / targets are constants
    # dropping the masked row gives the same value
    without = fn(tt([S5[i] for i in VALID5]), tt([T5[i] for i in VALID5]), torch.tensor([Y5[i] for i in VALID5]), None)
    assert without.item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("name", CASE_IDS)
@pytest.mark.parametrize("num_items", [None, 3])
def test_all_masked_batch_is_zero_with_finite_grads(name, num_items):
    fn, _ = LOSS_CASES[name]
    s = tt(S5[:2], requires_grad=True)
    loss = fn(s, tt(T5[:2]), torch.tensor([IGNORE_INDEX, IGNORE_INDEX]), num_items)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert (s.grad == 0).all()


@pytest.mark.parametrize("name", CASE_IDS)
def test_gradient_accumulation_with_num_items_matches_full_batch(name):
    fn, ref = LOSS_CASES[name]
    # micro-batch A = items 0..1 (1 valid of 2), micro-batch B = items 2..4 (3 valid of 3): uneven masking
    n_total = len(VALID5)  # 4
    s_full = tt(S5, requires_grad=True)
    full = fn(s_full, tt(T5), torch.tensor(Y5), None)
    full.backward()

    s_a = tt(S5[:2], requires_grad=True)
    s_b = tt(S5[2:], requires_grad=True)
    loss_a = fn(s_a, tt(T5[:2]), torch.tensor(Y5[:2]), n_total)  # python int
    loss_b = fn(s_b, tt(T5[2:]), torch.tensor(Y5[2:]), torch.tensor(n_total))  # 0-d tensor, as Trainer passes it
    (loss_a + loss_b).backward()

    assert (loss_a + loss_b).item() == pytest.approx(full.item(), abs=1e-6, rel=1e-10)
    assert full.item() == pytest.approx(py_mean([ref(S5[i], T5[i], Y5[i]) for i in VALID5]), rel=1e-10)
    assert torch.allclose(torch.cat([s_a.grad, s_b.grad]), s_full.grad, atol=1e-6, rtol=0)

    # the data is uneven enough that per-micro-batch means would NOT add up to the full-batch mean
    mean_a = fn(tt(S5[:2]), tt(T5[:2]), torch.tensor(Y5[:2]), None)
    mean_b = fn(tt(S5[2:]), tt(T5[2:]), torch.tensor(Y5[2:]), None)
    assert abs((mean_a + mean_b).item() / 2 - full.item()) > 1e-3


S3D = [
    [[0.2, -0.3, 1.0], [1.1, 0.0, -0.5], [3.0, 2.0, 1.0]],
    [[-1.0, 0.5, 0.5], [9e3, -9e3, 1e3], [0.0, 0.7, -0.2]],
]
T3D = [
    [[1.0, 0.0, 0.3], [0.4, 0.4, 0.1], [-1.0, 2.0, 0.0]],
    [[0.0, 1.5, -0.5], [-8e3, 8e3, 2e3], [0.9, 0.1, 0.0]],
]
Y3D = [[2, 0, IGNORE_INDEX], [1, IGNORE_INDEX, 1]]


@pytest.mark.parametrize("name", CASE_IDS)
def test_token_level_3d_with_masking(name):
    fn, ref = LOSS_CASES[name]
    s = tt(S3D, requires_grad=True)
    loss = fn(s, tt(T3D), torch.tensor(Y3D), None)
    tokens = [(b, i) for b in range(2) for i in range(3) if Y3D[b][i] != IGNORE_INDEX]
    expected = py_mean([ref(S3D[b][i], T3D[b][i], Y3D[b][i]) for b, i in tokens])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert s.grad[0, 2].tolist() == [0.0, 0.0, 0.0]
    assert s.grad[1, 1].tolist() == [0.0, 0.0, 0.0]

    # gradient accumulation over the batch dim: sequence 0 has 2 valid tokens, sequence 1 has 2 of 3 (one masked)
    parts = [fn(tt(S3D[b : b + 1]), tt(T3D[b : b + 1]), torch.tensor(Y3D[b : b + 1]), len(tokens)) for b in range(2)]
    assert sum(p.item() for p in parts) == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# cross_entropy_loss
# ----------------------------------------------------------------------------------------------------------------
def test_cross_entropy_matches_torch_mean_and_num_items():
    s, y = tt(S5), torch.tensor(Y5)
    ref = torch.nn.functional.cross_entropy(s, y, ignore_index=IGNORE_INDEX)
    assert cross_entropy_loss(s, y).item() == pytest.approx(ref.item(), rel=1e-12)
    # sum / num_items, not mean: with num_items = 10 the value is sum over the 4 valid items / 10
    total = sum(py_ce(S5[i], Y5[i]) for i in VALID5)
    assert cross_entropy_loss(s, y, num_items_in_batch=10).item() == pytest.approx(total / 10, rel=1e-10)


def test_cross_entropy_custom_ignore_index():
    s = tt([[1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    loss = cross_entropy_loss(s, torch.tensor([2, -1]), ignore_index=-1)
    assert loss.item() == pytest.approx(0.4076059644443804, rel=1e-12)  # only row 0, see test_cross_entropy_literal


def test_half_precision_is_upcast():
    s = torch.tensor(S5, dtype=torch.bfloat16)
    t = torch.tensor(T5, dtype=torch.bfloat16)
    y = torch.tensor(Y5)
    for loss, ref in [
        (cross_entropy_loss(s, y), cross_entropy_loss(s.double(), y)),
        (kd_kl_loss(s, t, 2.0, label_mask(y)), kd_kl_loss(s.double(), t.double(), 2.0, label_mask(y))),
    ]:
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# soft_target_cross_entropy
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_target_ce_gradient_is_softmax_minus_target_over_T(temperature):
    s = tt(S5, requires_grad=True)
    targets = [py_softmax(row, 1.5) for row in T5]
    target = tt(targets, requires_grad=True)
    loss = soft_target_cross_entropy(s, target, temperature, label_mask(torch.tensor(Y5)))
    loss.backward()
    count = len(VALID5)
    expected = [
        [(p - q) / temperature / count for p, q in zip(py_softmax(S5[i], temperature), targets[i])]
        if i in VALID5
        else [0.0] * 4
        for i in range(len(S5))
    ]
    assert torch.allclose(s.grad, tt(expected), atol=1e-12, rtol=0)
    assert target.grad is None  # targets are detached


def test_soft_target_ce_zero_target_with_neg_inf_logit():
    # target 0 where the logit is -inf: that class contributes 0 (not 0 * -inf = nan); loss = -1 * log 1 = 0
    s = tt([[0.0, float("-inf")]], requires_grad=True)
    loss = soft_target_cross_entropy(s, tt([[1.0, 0.0]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------------------------------------------
# kd_kl_loss
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_kl_has_T_squared_factor_and_forward_direction(temperature):
    s, t = tt(S5), tt(T5)
    mask = label_mask(torch.tensor(Y5))
    loss = kd_kl_loss(s, t, temperature, mask).item()
    # explicit KL(p_t || p_s) at temperature T, times T^2
    kl = py_mean([py_kl(py_softmax(T5[i], temperature), py_log_softmax(S5[i], temperature)) for i in VALID5])
    assert loss == pytest.approx(temperature**2 * kl, rel=1e-10)
    if temperature != 1.0:
        assert abs(loss - kl) > 1e-3  # a missing T^2 would fail
    # the reverse direction KL(p_s || p_t) gives a clearly different number on this data
    reverse = py_mean([py_kl(py_softmax(S5[i], temperature), py_log_softmax(T5[i], temperature)) for i in VALID5])
    assert abs(loss - temperature**2 * reverse) > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_kl_zero_when_student_equals_teacher(temperature):
    s = tt(S5, requires_grad=True)
    loss = kd_kl_loss(s, tt(S5), temperature)
    assert abs(loss.item()) < 1e-12
    loss.backward()
    assert s.grad.abs().max().item() < 1e-12


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_kd_kl_nonnegative_and_teacher_gets_no_grad(temperature):
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(6, 5, 7, generator=g)).requires_grad_()
    t = (3 * torch.randn(6, 5, 7, generator=g)).requires_grad_()
    per_row = [
        kd_kl_loss(s[i : i + 1, j : j + 1], t[i : i + 1, j : j + 1], temperature) for i in range(6) for j in range(5)
    ]
    assert min(v.item() for v in per_row) >= 0.0
    loss = kd_kl_loss(s, t, temperature)
    assert loss.item() > 0
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_kd_kl_handles_zero_teacher_probabilities():
    # teacher -inf (p_t = 0 exactly) and -1e4 (underflows to 0 in float32): those classes contribute 0
    s_rows = [[0.3, -0.2, 1.0], [2.0, 0.0, -1.0]]
    t_rows = [[1.0, float("-inf"), 0.0], [0.5, -1e4, 0.0]]
    s = torch.tensor(s_rows, requires_grad=True)
    loss = kd_kl_loss(s, torch.tensor(t_rows), 2.0)
    expected = py_mean([py_kd(a, b, 2.0) for a, b in zip(s_rows, t_rows)])
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------------------------------------------
# annealing_targets / teacher_annealing_loss
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, torch.tensor(0.7)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_annealing_targets_golden_and_rows_sum_to_one(lam, temperature):
    teacher = tt(T5, requires_grad=True)
    targets = annealing_targets(torch.tensor(Y5), teacher, lam, temperature)
    lam_f = float(lam)
    assert targets.shape == (5, 4)
    assert not targets.requires_grad
    assert torch.allclose(targets.sum(-1), torch.ones(5, dtype=DT), atol=1e-12)
    for i, y in enumerate(Y5):
        if y == IGNORE_INDEX:
            expected = py_softmax(T5[i], temperature)  # ignored row: pure teacher distribution
        else:
            expected = py_ta_target(T5[i], y, lam_f, temperature)
        assert targets[i].tolist() == pytest.approx(expected, abs=1e-12)


def test_teacher_annealing_lam1_equals_hard_ce_exactly():
    s, t, y = tt(S5), tt(T5), torch.tensor(Y5)
    for temperature in (1.0, 3.0):
        assert torch.equal(teacher_annealing_loss(s, t, y, 1.0, temperature), cross_entropy_loss(s, y))
        assert torch.equal(
            teacher_annealing_loss(s, t, y, 1.0, temperature, num_items_in_batch=7),
            cross_entropy_loss(s, y, num_items_in_batch=7),
        )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_teacher_annealing_lam0_is_soft_ce_against_teacher(temperature):
    s, t, y = tt(S5), tt(T5), torch.tensor(Y5)
    loss = teacher_annealing_loss(s, t, y, 0.0, temperature)
    # student at T = 1 against softmax(teacher / T)
    expected = py_mean([py_soft_ce(S5[i], py_softmax(T5[i], temperature), 1.0) for i in VALID5])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    same = soft_target_cross_entropy(s, torch.softmax(t / temperature, -1), 1.0, label_mask(y))
    assert loss.item() == pytest.approx(same.item(), rel=1e-12)


def test_teacher_annealing_student_not_tempered_and_teacher_no_grad():
    s, t, y = tt(S5, requires_grad=True), tt(T5, requires_grad=True), torch.tensor(Y5)
    loss = teacher_annealing_loss(s, t, y, 0.3, 4.0)
    expected = py_mean([py_ta(S5[i], T5[i], Y5[i], 0.3, 4.0) for i in VALID5])
    tempered_student = py_mean(
        [py_soft_ce(S5[i], py_ta_target(T5[i], Y5[i], 0.3, 4.0), 4.0) for i in VALID5]
    )  # wrong variant: student also divided by T
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert abs(loss.item() - tempered_student) > 1e-3
    loss.backward()
    assert t.grad is None


# ----------------------------------------------------------------------------------------------------------------
# logits_mse_loss
# ----------------------------------------------------------------------------------------------------------------
def test_logits_mse_teacher_no_grad_and_gradient():
    s = tt([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = tt([[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]], requires_grad=True)
    loss = logits_mse_loss(s, t, 0.5, mask=torch.tensor([True, False]), num_items_in_batch=2)
    # only row 0: mean([0, 1, 4]) = 5/3, divided by num_items 2 -> 5/6
    assert loss.item() == pytest.approx(5 / 6, rel=1e-12)
    loss.backward()
    assert t.grad is None
    # d/ds_c = 2 (s_c - 0.5 t_c) / C / num_items = 2 * [0, 1, 2] / 3 / 2 = [0, 1/3, 2/3]
    assert s.grad.tolist() == [pytest.approx([0.0, 1 / 3, 2 / 3], rel=1e-12), [0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------
TEMPERATURE_CALLS = {
    "soft_ce": lambda T: soft_target_cross_entropy(tt([[0.0, 1.0]]), tt([[0.5, 0.5]]), T),
    "kd": lambda T: kd_kl_loss(tt([[0.0, 1.0]]), tt([[1.0, 0.0]]), T),
    "targets": lambda T: annealing_targets(torch.tensor([0]), tt([[1.0, 0.0]]), 0.5, T),
    "ta": lambda T: teacher_annealing_loss(tt([[0.0, 1.0]]), tt([[1.0, 0.0]]), torch.tensor([0]), 0.5, T),
}


@pytest.mark.parametrize("call", list(TEMPERATURE_CALLS))
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(call, temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        TEMPERATURE_CALLS[call](temperature)


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan"), torch.tensor(2.0)])
def test_lam_out_of_range(lam):
    with pytest.raises(ValueError, match="lam"):
        annealing_targets(torch.tensor([0]), tt([[1.0, 0.0]]), lam)
    with pytest.raises(ValueError, match="lam"):
        teacher_annealing_loss(tt([[0.0, 1.0]]), tt([[1.0, 0.0]]), torch.tensor([0]), lam)


SHAPE_CALLS = {
    "kd": lambda s, t: kd_kl_loss(s, t),
    "ta": lambda s, t: teacher_annealing_loss(s, t, torch.zeros(2, dtype=torch.long), 0.5),
    "mse": lambda s, t: logits_mse_loss(s, t),
}


@pytest.mark.parametrize("call", list(SHAPE_CALLS))
def test_student_teacher_shape_mismatch_names_both_shapes(call):
    with pytest.raises(ValueError, match=r"student_logits has shape \(2, 3\).*teacher_logits has shape \(2, 4\)"):
        SHAPE_CALLS[call](torch.zeros(2, 3), torch.zeros(2, 4))


def test_other_shape_and_label_errors():
    with pytest.raises(ValueError, match=r"student_logits has shape \(2, 3\).*target_probs has shape \(2, 4\)"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"labels has shape \(3,\)"):
        cross_entropy_loss(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 5\)"):
        kd_kl_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="out-of-range"):
        cross_entropy_loss(torch.zeros(2, 4), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="out-of-range"):
        annealing_targets(torch.tensor([-3]), torch.zeros(1, 4), 0.5)
    with pytest.raises(ValueError, match="integer"):
        cross_entropy_loss(torch.zeros(2, 4), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="scale"):
        logits_mse_loss(torch.zeros(2, 4), torch.zeros(2, 4), float("nan"))


def test_ddml_unlabelled_items_count_in_the_teacher_terms_only():
    from distil_trainers.losses import UNLABELLED, ddml_loss

    torch.manual_seed(0)
    s, t, p = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([2, UNLABELLED, 0, UNLABELLED])
    out = ddml_loss(s, t, [p], labels, num_items_in_batch=4)
    log_s = torch.log_softmax(s, -1)
    hard = -(log_s[0, 2] + log_s[2, 0]) / 4  # gold items only, divided by every counted item
    soft = -(torch.softmax(t, -1) * log_s).sum(-1).sum() / 4
    assert torch.allclose(out["loss_hard"], hard) and torch.allclose(out["loss_soft"], soft)
