"""Golden-value tests for the DDML losses: ``mutual_kl_loss`` and ``ddml_loss`` (the DDML paper, equations 6-11).

Every expectation is computed independently of the implementation: literal numbers worked out by hand (arithmetic in
the comments) or the plain-python reference formulas below, which loop over python lists of floats with ``math.exp``
/ ``math.log`` and never call torch. Gradients are checked against closed-form derivatives and against central finite
differences of the plain-python loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import DT, py_log_softmax, py_softmax, tt

from distil_trainers.losses import IGNORE_INDEX, KL_DIRECTIONS, ddml_loss, label_mask, mutual_kl_loss

LN2, LN3 = math.log(2.0), math.log(3.0)


# ----------------------------------------------------------------------------------------------------------------
# plain-python reference formulas (lists of floats, no torch)
# ----------------------------------------------------------------------------------------------------------------


def py_kl(log_p, log_q):
    """KL(p || q) = sum_c p_c (log p_c - log q_c)."""
    return sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))


def py_mutual(s, peer, temperature, direction):
    log_pi, log_pk = py_log_softmax(s, temperature), py_log_softmax(peer, temperature)
    return py_kl(log_pi, log_pk) if direction == "student_peer" else py_kl(log_pk, log_pi)


def py_hard(s, y):
    return -py_log_softmax(s)[y]


def py_soft(s, t, temperature):
    """CE(softmax(t / T), softmax(s / T)) = -sum_c p_t,c log p_s,c."""
    return -sum(p * ls for p, ls in zip(py_softmax(t, temperature), py_log_softmax(s, temperature)))


def py_ddml(s_rows, t_rows, peers_rows, labels, a, b, c, temperature, direction, n=None):
    """(total, hard, soft, mutual) of eq. 11, summed over labelled items and divided by n (default: their count)."""
    valid = [i for i, y in enumerate(labels) if y != IGNORE_INDEX]
    n = len(valid) if n is None else n
    hard = sum(py_hard(s_rows[i], labels[i]) for i in valid) / n
    soft = sum(py_soft(s_rows[i], t_rows[i], temperature) for i in valid) / n
    mutual = sum(
        sum(py_mutual(s_rows[i], peer[i], temperature, direction) for i in valid) / n for peer in peers_rows
    ) / len(peers_rows)
    return a * hard + b * soft + c * mutual, hard, soft, mutual


def py_mutual_grad_student_peer(s, peer, temperature):
    """d KL(P_i || P_k) / d z_i = P_i * (log P_i - log P_k - KL) / T (softmax Jacobian applied by hand)."""
    log_pi, log_pk = py_log_softmax(s, temperature), py_log_softmax(peer, temperature)
    kl = py_kl(log_pi, log_pk)
    return [math.exp(lp) * (lp - lq - kl) / temperature for lp, lq in zip(log_pi, log_pk)]


def py_mutual_grad_peer_student(s, peer, temperature):
    """d KL(P_k || P_i) / d z_i = (P_i - P_k) / T."""
    p_i, p_k = py_softmax(s, temperature), py_softmax(peer, temperature)
    return [(x - y) / temperature for x, y in zip(p_i, p_k)]


# ----------------------------------------------------------------------------------------------------------------
# shared data: 5 items x 4 classes; item 1 is unlabelled and has huge (finite) logits that would dominate any mean
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
P5 = [
    [-0.3, 0.8, 0.1, 1.2],
    [-5e3, 2e3, 1e4, 0.0],  # masked
    [1.0, -1.0, 0.5, 0.2],
    [0.0, 2.0, -0.5, -1.0],
    [0.7, 0.7, 0.1, -2.0],
]
Q5 = [
    [2.0, 0.0, -1.0, 0.5],
    [3e3, 3e3, -1e4, 1.0],  # masked
    [-0.4, -0.4, 2.2, 0.9],
    [1.1, -0.6, 0.3, 0.0],
    [-1.5, 0.5, 1.0, 0.25],
]
Y5 = [2, IGNORE_INDEX, 3, 1, 0]
VALID5 = [i for i, y in enumerate(Y5) if y != IGNORE_INDEX]
WEIGHTS = dict(hard_weight=0.5, soft_weight=2.0, mutual_weight=3.0)


# ================================================================================================================
# mutual_kl_loss
# ================================================================================================================
def test_kl_directions_constant():
    assert KL_DIRECTIONS == ("student_peer", "peer_student")


# student [0, 0] -> P_i = [1/2, 1/2]; peer [ln 3, 0] -> P_k = [3/4, 1/4]
#   KL(P_i || P_k) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)             = 0.14384103622589042
#   KL(P_k || P_i) = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2        = 0.13081203594113697
# At T = 2 the peer [2 ln 3, 0] gives the same P_k (the student [0, 0] is unchanged by T), so the same numbers.
HALF_LN_4_3 = 0.5 * math.log(4.0 / 3.0)
THREE_Q_LN3_MINUS_LN2 = 0.75 * LN3 - LN2


@pytest.mark.parametrize(
    "peer, temperature",
    [([LN3, 0.0], 1.0), ([2 * LN3, 0.0], 2.0)],
    ids=["T1", "T2"],
)
def test_mutual_kl_hand_values_and_direction_matters(peer, temperature):
    s, p = tt([[0.0, 0.0]]), tt([peer])
    sp = mutual_kl_loss(s, p, temperature, "student_peer")
    ps = mutual_kl_loss(s, p, temperature, "peer_student")
    assert sp.item() == pytest.approx(0.14384103622589042, abs=1e-12)
    assert ps.item() == pytest.approx(0.13081203594113697, abs=1e-12)
    assert HALF_LN_4_3 == pytest.approx(0.14384103622589042) and THREE_Q_LN3_MINUS_LN2 == pytest.approx(0.130812035941137)
    assert abs(sp.item() - ps.item()) > 0.01  # the direction matters on this asymmetric pair


def test_mutual_kl_default_direction_is_the_papers():
    s, p = tt([[0.0, 0.0]]), tt([[LN3, 0.0]])
    assert mutual_kl_loss(s, p).item() == pytest.approx(HALF_LN_4_3, abs=1e-12)  # KL(P_i || P_k), T = 1


def test_mutual_kl_swapping_roles_swaps_directions():
    # student [2 ln 3, 0] at T=2 -> [3/4, 1/4]; peer [0, 0] -> [1/2, 1/2]: student_peer is now 3/4 ln 3 - ln 2
    s, p = tt([[2 * LN3, 0.0]]), tt([[0.0, 0.0]])
    assert mutual_kl_loss(s, p, 2.0, "student_peer").item() == pytest.approx(THREE_Q_LN3_MINUS_LN2, abs=1e-12)
    assert mutual_kl_loss(s, p, 2.0, "peer_student").item() == pytest.approx(HALF_LN_4_3, abs=1e-12)


def test_mutual_kl_temperature_divides_both_logits():
    # peer [ln 3, 0] at T = 2 -> P_k = [sqrt3, 1] / (1 + sqrt3), not [3/4, 1/4]
    r3 = math.sqrt(3.0)
    pk = [r3 / (1 + r3), 1 / (1 + r3)]
    expected_sp = 0.5 * math.log(0.5 / pk[0]) + 0.5 * math.log(0.5 / pk[1])
    expected_ps = pk[0] * math.log(pk[0] / 0.5) + pk[1] * math.log(pk[1] / 0.5)
    s, p = tt([[0.0, 0.0]]), tt([[LN3, 0.0]])
    assert mutual_kl_loss(s, p, 2.0, "student_peer").item() == pytest.approx(expected_sp, abs=1e-12)
    assert mutual_kl_loss(s, p, 2.0, "peer_student").item() == pytest.approx(expected_ps, abs=1e-12)
    assert expected_sp != pytest.approx(HALF_LN_4_3, abs=1e-3)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_mutual_kl_batch_matches_reference(direction, temperature):
    valid_s = [S5[i] for i in VALID5]
    valid_p = [P5[i] for i in VALID5]
    expected = sum(py_mutual(s, p, temperature, direction) for s, p in zip(valid_s, valid_p)) / len(VALID5)
    got = mutual_kl_loss(tt(valid_s), tt(valid_p), temperature, direction)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # and the other direction gives a different number on these asymmetric rows
    other = "peer_student" if direction == "student_peer" else "student_peer"
    expected_other = sum(py_mutual(s, p, temperature, other) for s, p in zip(valid_s, valid_p)) / len(VALID5)
    assert abs(expected - expected_other) > 1e-3
    assert mutual_kl_loss(tt(valid_s), tt(valid_p), temperature, other).item() == pytest.approx(expected_other, rel=1e-12)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_mutual_kl_zero_for_equal_distributions(direction):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, dtype=DT) * 3
    assert mutual_kl_loss(s, s.clone(), 2.0, direction).item() == pytest.approx(0.0, abs=1e-12)
    # softmax is shift-invariant: a per-row constant added to the peer changes nothing
    shifted = s + torch.arange(6, dtype=DT).unsqueeze(-1) * 7.0
    assert mutual_kl_loss(s, shifted, 1.0, direction).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_mutual_kl_non_negative_per_item(direction, temperature):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(25, 4, generator=g, dtype=DT) * 4
    p = torch.randn(25, 4, generator=g, dtype=DT) * 4
    values = [mutual_kl_loss(s[i : i + 1], p[i : i + 1], temperature, direction).item() for i in range(25)]
    assert all(v >= 0 for v in values)
    assert max(values) > 0.05


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_mutual_kl_peer_gets_no_gradient(direction):
    s, p = tt(S5[:1] + S5[2:], requires_grad=True), tt(P5[:1] + P5[2:], requires_grad=True)
    mutual_kl_loss(s, p, 2.0, direction).backward()
    assert p.grad is None
    assert s.grad is not None and s.grad.abs().max() > 1e-3


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_mutual_kl_gradient_closed_form(direction):
    temperature = 2.0
    rows_s = [S5[i] for i in VALID5]
    rows_p = [P5[i] for i in VALID5]
    s = tt(rows_s, requires_grad=True)
    mutual_kl_loss(s, tt(rows_p), temperature, direction).backward()
    grad_fn = py_mutual_grad_student_peer if direction == "student_peer" else py_mutual_grad_peer_student
    expected = [[g / len(rows_s) for g in grad_fn(a, b, temperature)] for a, b in zip(rows_s, rows_p)]
    torch.testing.assert_close(s.grad, tt(expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_mutual_kl_masked_items_excluded(direction):
    s, p, y = tt(S5, requires_grad=True), tt(P5), torch.tensor(Y5)
    loss = mutual_kl_loss(s, p, 2.0, direction, mask=label_mask(y))
    expected = sum(py_mutual(S5[i], P5[i], 2.0, direction) for i in VALID5) / len(VALID5)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[1], torch.zeros(4, dtype=DT))  # the masked row gets exactly no gradient
    assert s.grad[0].abs().max() > 1e-4


def test_mutual_kl_all_masked_is_zero():
    s = tt([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    loss = mutual_kl_loss(s, tt([[2.0, 0.0], [1.0, 1.0]]), mask=torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_mutual_kl_num_items_in_batch(direction):
    mask = label_mask(torch.tensor(Y5))
    total = sum(py_mutual(S5[i], P5[i], 1.0, direction) for i in VALID5)
    for n in (10, torch.tensor(10)):
        got = mutual_kl_loss(tt(S5), tt(P5), 1.0, direction, mask=mask, num_items_in_batch=n)
        assert got.item() == pytest.approx(total / 10, rel=1e-12)
    # two micro-batches normalised by the global count sum to the loss of the whole batch
    first = mutual_kl_loss(tt(S5[:2]), tt(P5[:2]), 1.0, direction, mask=mask[:2], num_items_in_batch=4)
    second = mutual_kl_loss(tt(S5[2:]), tt(P5[2:]), 1.0, direction, mask=mask[2:], num_items_in_batch=4)
    assert (first + second).item() == pytest.approx(total / 4, rel=1e-12)


def test_mutual_kl_token_level_shapes():
    # (B=2, L=3, C=3) logits with a (B, L) mask: items are tokens
    s_rows = [[[0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [2.0, 0.0, 0.5]], [[0.0, 0.0, 0.0], [-1.0, 1.0, 3.0], [0.4, 0.4, 0.2]]]
    p_rows = [[[1.0, 0.0, 0.0], [0.0, 0.5, 1.0], [0.3, 0.3, 0.3]], [[2.0, -2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 2.0, 3.0]]]
    mask = [[True, True, False], [True, False, True]]
    expected = [
        py_mutual(s_rows[b][j], p_rows[b][j], 2.0, "student_peer") for b in range(2) for j in range(3) if mask[b][j]
    ]
    got = mutual_kl_loss(tt(s_rows), tt(p_rows), 2.0, mask=torch.tensor(mask))
    assert got.item() == pytest.approx(sum(expected) / 4, rel=1e-12)


def test_mutual_kl_errors():
    s = tt([[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="direction must be one of"):
        mutual_kl_loss(s, s, direction="symmetric")
    with pytest.raises(ValueError, match="shape mismatch.*peer_logits"):
        mutual_kl_loss(s, tt([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape mismatch"):
        mutual_kl_loss(s, s, mask=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="temperature"):
        mutual_kl_loss(s, s, temperature=0.0)


# ================================================================================================================
# ddml_loss
# ================================================================================================================
# One item, label 0, T = 2, a = 0.5, b = 2, c = 3; student [2 ln 3, 0], teacher [0, 0], peer [0, 0]:
#   hard   = -ln softmax([2 ln 3, 0])_0 = -ln(9/10)                                 = 0.10536051565782628
#   soft   = -(1/2 ln 3/4 + 1/2 ln 1/4) = 1/2 ln(16/3)          (P_i^T = [3/4, 1/4]) = 0.8369882167858358
#   mutual = KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln(3/2) + 1/4 ln(1/2)               = 0.13081203594113697
#   loss   = 0.5 * hard + 2 * soft + 3 * mutual                                     = 2.1190927992239956
HAND_STUDENT, HAND_TEACHER, HAND_LABELS = [[2 * LN3, 0.0]], [[0.0, 0.0]], [0]


def test_ddml_k2_hand_values():
    out = ddml_loss(
        tt(HAND_STUDENT), tt(HAND_TEACHER), [tt([[0.0, 0.0]])], torch.tensor(HAND_LABELS), temperature=2.0, **WEIGHTS
    )
    assert set(out) == {"loss", "loss_hard", "loss_soft", "loss_mutual"}
    assert out["loss_hard"].item() == pytest.approx(0.10536051565782628, abs=1e-12)
    assert out["loss_soft"].item() == pytest.approx(0.8369882167858358, abs=1e-12)
    assert out["loss_mutual"].item() == pytest.approx(0.13081203594113697, abs=1e-12)
    assert out["loss"].item() == pytest.approx(2.1190927992239956, abs=1e-12)


# K = 3: a second peer [0, 2 ln 3] -> P = [1/4, 3/4] at T = 2.
#   student_peer: KL([3/4,1/4] || [1/2,1/2]) = 0.130812..., KL([3/4,1/4] || [1/4,3/4]) = 3/4 ln 3 - 1/4 ln 3 = 1/2 ln 3
#       mutual = (0.13081203594113697 + 0.5493061443340549) / 2 = 0.3400590901375959
#       loss   = 0.5 * 0.10536051565782628 + 2 * 0.8369882167858358 + 3 * 0.3400590901375959 = 2.74677..
#   peer_student: KL([1/2,1/2] || [3/4,1/4]) = 1/2 ln(4/3), KL([1/4,3/4] || [3/4,1/4]) = 1/2 ln 3
#       mutual = (1/2 ln(4/3) + 1/2 ln 3) / 2 = 1/4 ln 4 = 1/2 ln 2 = 0.34657359027997264
@pytest.mark.parametrize(
    "direction, mutual",
    [("student_peer", (0.13081203594113697 + 0.5 * LN3) / 2), ("peer_student", 0.5 * LN2)],
)
def test_ddml_k3_hand_values_average_over_peers(direction, mutual):
    peers = [tt([[0.0, 0.0]]), tt([[0.0, 2 * LN3]])]
    out = ddml_loss(
        tt(HAND_STUDENT), tt(HAND_TEACHER), peers, torch.tensor(HAND_LABELS), temperature=2.0, direction=direction,
        **WEIGHTS,
    )
    assert out["loss_mutual"].item() == pytest.approx(mutual, abs=1e-12)
    assert out["loss_hard"].item() == pytest.approx(0.10536051565782628, abs=1e-12)
    assert out["loss_soft"].item() == pytest.approx(0.8369882167858358, abs=1e-12)
    expected = 0.5 * 0.10536051565782628 + 2 * 0.8369882167858358 + 3 * mutual
    assert out["loss"].item() == pytest.approx(expected, abs=1e-12)
    assert (0.13081203594113697 + 0.5 * LN3) / 2 == pytest.approx(0.3400590901375959, abs=1e-15)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("k", [2, 3])
def test_ddml_batch_matches_reference(k, temperature, direction):
    peers = [P5, Q5][: k - 1]
    out = ddml_loss(
        tt(S5), tt(T5), [tt(p) for p in peers], torch.tensor(Y5), temperature=temperature, direction=direction,
        **WEIGHTS,
    )
    total, hard, soft, mutual = py_ddml(S5, T5, peers, Y5, 0.5, 2.0, 3.0, temperature, direction)
    assert out["loss_hard"].item() == pytest.approx(hard, rel=1e-12)
    assert out["loss_soft"].item() == pytest.approx(soft, rel=1e-12)
    assert out["loss_mutual"].item() == pytest.approx(mutual, rel=1e-12)
    assert out["loss"].item() == pytest.approx(total, rel=1e-12)
    # sanity of the reference itself: the weights are not all 1, so the total is not the plain sum
    assert abs(total - (hard + soft + mutual)) > 1e-3


def test_ddml_k3_mutual_is_the_mean_not_the_sum():
    peers = [tt(P5), tt(Q5)]
    out = ddml_loss(tt(S5), tt(T5), peers, torch.tensor(Y5), temperature=2.0)
    each = [sum(py_mutual(S5[i], p[i], 2.0, "student_peer") for i in VALID5) / len(VALID5) for p in (P5, Q5)]
    assert out["loss_mutual"].item() == pytest.approx((each[0] + each[1]) / 2, rel=1e-12)
    assert abs(each[0] - each[1]) > 1e-2


def test_ddml_default_weights_and_direction():
    out = ddml_loss(tt(S5), tt(T5), [tt(P5)], torch.tensor(Y5))
    total, hard, soft, mutual = py_ddml(S5, T5, [P5], Y5, 1.0, 1.0, 1.0, 1.0, "student_peer")
    assert out["loss"].item() == pytest.approx(total, rel=1e-12)
    assert out["loss_mutual"].item() == pytest.approx(mutual, rel=1e-12)


def test_ddml_masked_items_count_in_no_term():
    # dropping the unlabelled row by hand gives the same numbers as keeping it with label -100
    keep = VALID5
    full = ddml_loss(tt(S5), tt(T5), [tt(P5), tt(Q5)], torch.tensor(Y5), temperature=2.0, **WEIGHTS)
    sub = ddml_loss(
        tt([S5[i] for i in keep]), tt([T5[i] for i in keep]), [tt([P5[i] for i in keep]), tt([Q5[i] for i in keep])],
        torch.tensor([Y5[i] for i in keep]), temperature=2.0, **WEIGHTS,
    )
    for key in ("loss", "loss_hard", "loss_soft", "loss_mutual"):
        assert full[key].item() == pytest.approx(sub[key].item(), rel=1e-12), key
    s = tt(S5, requires_grad=True)
    ddml_loss(s, tt(T5), [tt(P5)], torch.tensor(Y5), temperature=2.0, **WEIGHTS)["loss"].backward()
    assert torch.equal(s.grad[1], torch.zeros(4, dtype=DT))
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_ddml_num_items_in_batch(direction):
    n = 7  # e.g. the labelled items of all gradient-accumulation micro-batches
    out = ddml_loss(
        tt(S5), tt(T5), [tt(P5), tt(Q5)], torch.tensor(Y5), temperature=2.0, direction=direction,
        num_items_in_batch=n, **WEIGHTS,
    )
    total, hard, soft, mutual = py_ddml(S5, T5, [P5, Q5], Y5, 0.5, 2.0, 3.0, 2.0, direction, n=n)
    assert out["loss"].item() == pytest.approx(total, rel=1e-12)
    assert out["loss_hard"].item() == pytest.approx(hard, rel=1e-12)
    assert out["loss_soft"].item() == pytest.approx(soft, rel=1e-12)
    assert out["loss_mutual"].item() == pytest.approx(mutual, rel=1e-12)
    # with 4 labelled items, dividing by 7 instead of 4 scales every term by 4 / 7
    plain = ddml_loss(tt(S5), tt(T5), [tt(P5), tt(Q5)], torch.tensor(Y5), temperature=2.0, direction=direction, **WEIGHTS)
    assert out["loss"].item() == pytest.approx(plain["loss"].item() * 4 / 7, rel=1e-12)


def test_ddml_teacher_and_peers_get_no_gradient():
    s = tt(S5, requires_grad=True)
    t, p, q = tt(T5, requires_grad=True), tt(P5, requires_grad=True), tt(Q5, requires_grad=True)
    ddml_loss(s, t, [p, q], torch.tensor(Y5), temperature=2.0, **WEIGHTS)["loss"].backward()
    assert t.grad is None and p.grad is None and q.grad is None
    assert s.grad.abs().max() > 1e-3


def test_ddml_gradient_closed_form_k2():
    """d L_i / d z_i per labelled item, divided by N (autograd-free):
    a * (softmax(z) - onehot(y)) + b * (P_i^T - P_t^T) / T + c * P_i^T * (log P_i^T - log P_k^T - KL) / T."""
    a, b, c, temperature = 0.5, 2.0, 3.0, 2.0
    s = tt(S5, requires_grad=True)
    ddml_loss(s, tt(T5), [tt(P5)], torch.tensor(Y5), temperature=temperature, **WEIGHTS)["loss"].backward()
    n = len(VALID5)
    expected = [[0.0] * 4 for _ in S5]
    for i in VALID5:
        p1 = py_softmax(S5[i])
        pi, pt = py_softmax(S5[i], temperature), py_softmax(T5[i], temperature)
        kl_grad = py_mutual_grad_student_peer(S5[i], P5[i], temperature)
        for j in range(4):
            onehot = 1.0 if j == Y5[i] else 0.0
            g = a * (p1[j] - onehot) + b * (pi[j] - pt[j]) / temperature + c * kl_grad[j]
            expected[i][j] = g / n
    torch.testing.assert_close(s.grad, tt(expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("direction", KL_DIRECTIONS)
def test_ddml_gradient_finite_differences_k3(direction):
    """Central finite differences of the plain-python eq. 11 (peers fixed) match autograd of ddml_loss."""
    temperature, eps = 2.0, 1e-6
    s = tt(S5, requires_grad=True)
    ddml_loss(
        s, tt(T5), [tt(P5), tt(Q5)], torch.tensor(Y5), temperature=temperature, direction=direction, **WEIGHTS
    )["loss"].backward()

    def f(rows):
        return py_ddml(rows, T5, [P5, Q5], Y5, 0.5, 2.0, 3.0, temperature, direction)[0]

    numeric = [[0.0] * 4 for _ in S5]
    for i in VALID5:  # the masked row has no influence on f; its expected gradient is 0
        for j in range(4):
            up = [row[:] for row in S5]
            down = [row[:] for row in S5]
            up[i][j] += eps
            down[i][j] -= eps
            numeric[i][j] = (f(up) - f(down)) / (2 * eps)
    torch.testing.assert_close(s.grad, tt(numeric), atol=1e-8, rtol=0)


def test_ddml_errors():
    s, y = tt([[0.0, 1.0, 2.0]]), torch.tensor([1])
    for empty in ([], ()):
        with pytest.raises(ValueError, match="at least one peer"):
            ddml_loss(s, s, empty, y)
    with pytest.raises(ValueError, match="direction must be one of"):
        ddml_loss(s, s, [s], y, direction="both")
    with pytest.raises(ValueError, match="shape mismatch.*peer_logits"):
        ddml_loss(s, s, [tt([[0.0, 1.0]])], y)
    with pytest.raises(ValueError, match="shape mismatch.*peer_logits"):
        ddml_loss(s, s, [s, tt([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])], y)  # the second peer is wrong
    with pytest.raises(ValueError, match="shape mismatch.*teacher_logits"):
        ddml_loss(s, tt([[0.0, 1.0, 2.0, 3.0]]), [s], y)
    with pytest.raises(ValueError, match="shape mismatch.*labels"):
        ddml_loss(s, s, [s], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="out-of-range"):
        ddml_loss(s, s, [s], torch.tensor([3]))
    with pytest.raises(ValueError, match="temperature"):
        ddml_loss(s, s, [s], y, temperature=-1.0)
    with pytest.raises(ValueError, match="mutual_weight must be finite"):
        ddml_loss(s, s, [s], y, mutual_weight=float("nan"))
