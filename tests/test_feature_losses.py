"""Golden-value tests for the feature-level losses of distil_trainers.losses.

Expectations are literal numbers worked out by hand (arithmetic in the comments) or come from the plain-python
reference formulas below, which loop over python lists with ``math.exp`` / ``math.log`` and never call torch or the
functions under test.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from reference import DT, py_softmax, tt

from distil_trainers.losses import (
    attention_mse_loss,
    cls_vector_loss,
    hidden_cosine_loss,
    hidden_kl_loss,
    hidden_mse_loss,
    similarity_kl_loss,
)

# ----------------------------------------------------------------------------------------------------------------
# plain-python references
# ----------------------------------------------------------------------------------------------------------------


def py_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def py_dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def py_token_kl(s, t, temperature):
    return py_kl(py_softmax(t, temperature), py_softmax(s, temperature))


def py_token_mse(s, t):
    return sum((a - b) ** 2 for a, b in zip(s, t)) / len(s)


def py_token_cos(s, t):
    return 1 - py_dot(s, t) / (math.sqrt(py_dot(s, s)) * math.sqrt(py_dot(t, t)))


def py_reduce(per_seq_values, num_items=None):
    """Mean over sequences that have a value (None = no valid token), or sum / num_items."""
    vals = [v for v in per_seq_values if v is not None]
    return sum(vals) / (num_items if num_items is not None else max(len(vals), 1))


def py_token_loss(token_fn, S, T, mask, num_items=None):
    per_seq = []
    for b in range(len(S)):
        vals = [token_fn(S[b][i], T[b][i]) for i in range(len(S[b])) if mask[b][i]]
        per_seq.append(sum(vals) / len(vals) if vals else None)
    return py_reduce(per_seq, num_items)


def py_similarity_kl(S, T, mask, temperature=1.0, num_items=None):
    per_seq = []
    for b in range(len(S)):
        valid = [i for i in range(len(S[b])) if mask[b][i]]
        ds, dt = len(S[b][0]), len(T[b][0])
        vals = []
        for i in valid:
            row_s = [py_dot(S[b][i], S[b][j]) / math.sqrt(ds) for j in valid]
            row_t = [py_dot(T[b][i], T[b][j]) / math.sqrt(dt) for j in valid]
            vals.append(py_kl(py_softmax(row_t, temperature), py_softmax(row_s, temperature)))
        per_seq.append(sum(vals) / len(vals) if vals else None)
    return py_reduce(per_seq, num_items)


def py_attention_mse(A, B_, mask, num_items=None):
    per_seq = []
    for b in range(len(A)):
        valid = [i for i in range(len(mask[b])) if mask[b][i]]
        sq = [(A[b][h][i][j] - B_[b][h][i][j]) ** 2 for h in range(len(A[b])) for i in valid for j in valid]
        per_seq.append(sum(sq) / len(sq) if sq else None)
    return py_reduce(per_seq, num_items)


def rand_nested(shape, rng, scale=1.0):
    if len(shape) == 1:
        return [rng.uniform(-scale, scale) for _ in range(shape[0])]
    return [rand_nested(shape[1:], rng, scale) for _ in range(shape[0])]


def rand_attention(batch, heads, length, rng):
    return [[[py_softmax(rand_nested((length,), rng, 2.0)) for _ in range(length)] for _ in range(heads)]
            for _ in range(batch)]


MASK = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


# ----------------------------------------------------------------------------------------------------------------
# literal values
# ----------------------------------------------------------------------------------------------------------------
def test_hidden_kl_literal():
    # p_t = softmax([ln 3, 0]) = [3/4, 1/4], p_s = softmax([0, 0]) = [1/2, 1/2]
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304098831 - 0.173286795 = 0.130812036
    loss = hidden_kl_loss(tt([[[0.0, 0.0]]]), tt([[[math.log(3), 0.0]]]))
    assert loss.item() == pytest.approx(0.13081203594, abs=1e-10)


def test_hidden_kl_temperature_literal():
    # T = 2: p_t = softmax([ln 9 / 2, 0]) = softmax([ln 3, 0]), the same value as above; no T^2 factor
    loss = hidden_kl_loss(tt([[[0.0, 0.0]]]), tt([[[math.log(9), 0.0]]]), temperature=2.0)
    assert loss.item() == pytest.approx(0.13081203594, abs=1e-10)


def test_similarity_kl_literal_with_unequal_widths_and_padding():
    # student tokens [1, 0], [0, 1] (d = 2): S_s = [[1, 0], [0, 1]] / sqrt(2)
    # teacher tokens [1], [-1] (d = 1):      S_t = [[1, -1], [-1, 1]]
    # row 1: p_t = softmax([1, -1]) = [1/(1+e^-2), .] = [0.880797078, 0.119202922]
    #        p_s = softmax([1/sqrt2, 0]) = [1/(1+e^-0.70710678), .] = [0.669761549, 0.330238451]
    #        KL = 0.880797078 ln(0.880797078/0.669761549) + 0.119202922 ln(0.119202922/0.330238451) = 0.119788866
    # row 2 is the mirror image: the same KL. Mean over the 2 valid tokens = 0.119788866.
    # A third, padded token (garbage values, mask 0) must change nothing: neither as query nor as key.
    student = tt([[[1.0, 0.0], [0.0, 1.0], [50.0, -70.0]]])
    teacher = tt([[[1.0], [-1.0], [99.0]]])
    mask = torch.tensor([[1, 1, 0]])
    loss = similarity_kl_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(0.11978886588, abs=1e-9)
    assert similarity_kl_loss(student[:, :2], teacher[:, :2]).item() == pytest.approx(0.11978886588, abs=1e-9)


def test_mse_and_cosine_literal():
    # mse: ((1-0)^2 + (2-0)^2) / 2 = 2.5; cosine: 1 - ([1,0].[1,1]) / (1 * sqrt 2) = 1 - 1/sqrt(2) = 0.292893219
    assert hidden_mse_loss(tt([[[1.0, 2.0]]]), tt([[[0.0, 0.0]]])).item() == pytest.approx(2.5)
    assert hidden_cosine_loss(tt([[[1.0, 0.0]]]), tt([[[1.0, 1.0]]])).item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_sequence_average_then_batch_average():
    # sequence 1: one valid token, mse (1^2 + 2^2)/2 = 2.5 (its padded token has a huge error, masked)
    # sequence 2: two tokens with mse 1 and 3 -> 2. Loss = (2.5 + 2) / 2 = 2.25 (NOT the token mean 6.5 / 3)
    student = tt([[[1.0, 2.0], [1000.0, 1000.0]], [[1.0, 1.0], [1.0, math.sqrt(5.0)]]])
    teacher = tt([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert hidden_mse_loss(student, teacher, mask).item() == pytest.approx(2.25)
    # with num_items_in_batch = 4 sequences (the others in another micro-batch): (2.5 + 2) / 4
    assert hidden_mse_loss(student, teacher, mask, num_items_in_batch=4).item() == pytest.approx(1.125)
    # a sequence without valid tokens is not an item
    mask0 = torch.tensor([[0, 0], [1, 1]])
    assert hidden_mse_loss(student, teacher, mask0).item() == pytest.approx(2.0)


def test_cls_vector_literal_uses_first_token_only():
    # [CLS] vectors: student [1, 2] / [3, 0]; teacher [0, 0] / [3, 4]; other tokens are noise.
    # mse: (1 + 4)/2 = 2.5 and (0 + 16)/2 = 8 -> mean 5.25
    # cosine: [1,2].[0,0] -> norm product 0 -> clamped, cos = 0 -> 1; [3,0].[3,4] = 9 / (3 * 5) = 0.6 -> 0.4; mean 0.7
    # kl: row 1: softmax([0,0]) vs softmax([1,2]) ; row 2: softmax([3,4]) vs softmax([3,0])
    student = tt([[[1.0, 2.0], [9.0, -9.0]], [[3.0, 0.0], [-4.0, 7.0]]])
    teacher = tt([[[0.0, 0.0], [5.0, 5.0]], [[3.0, 4.0], [8.0, 8.0]]])
    assert cls_vector_loss(student, teacher, "mse").item() == pytest.approx(5.25)
    assert cls_vector_loss(student, teacher, "cosine").item() == pytest.approx(0.7)
    expected_kl = (py_kl([0.5, 0.5], py_softmax([1.0, 2.0])) + py_kl(py_softmax([3.0, 4.0]), py_softmax([3.0, 0.0]))) / 2
    assert cls_vector_loss(student, teacher, "kl").item() == pytest.approx(expected_kl, abs=1e-12)
    # (B, H) inputs are [CLS] vectors already; a (B,) mask drops the second sequence
    assert cls_vector_loss(student[:, 0], teacher[:, 0], "mse", mask=torch.tensor([1, 0])).item() == pytest.approx(2.5)
    # a (B, L) token mask: its first column decides
    assert cls_vector_loss(student, teacher, "mse", mask=torch.tensor([[0, 1], [1, 1]])).item() == pytest.approx(8.0)


def test_attention_mse_literal_and_mask():
    # one head, L = 2: student [[.5, .5], [1, 0]], teacher [[1, 0], [1, 0]]
    # squared errors .25, .25, 0, 0 -> mean .125; with token 2 padded only the pair (1, 1): (.5 - 1)^2 = .25
    student = tt([[[[0.5, 0.5], [1.0, 0.0]]]])
    teacher = tt([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert attention_mse_loss(student, teacher).item() == pytest.approx(0.125)
    assert attention_mse_loss(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(0.25)


def test_attention_mse_padding_leaks_nothing_and_accumulates():
    torch.manual_seed(3)
    a = torch.rand(3, 2, 4, 4, dtype=DT)
    b = torch.rand(3, 2, 4, 4, dtype=DT)
    mask = torch.tensor(MASK)
    a_bad = a.clone()
    a_bad[0, :, 3, :], a_bad[1, :, :, 2:] = float("nan"), float("inf")
    a_bad.requires_grad_()
    a_ok = a.clone().requires_grad_()
    bad, ok = attention_mse_loss(a_bad, b, mask), attention_mse_loss(a_ok, b, mask)
    assert bad.item() == pytest.approx(ok.item(), abs=1e-12)
    bad.backward()
    ok.backward()
    torch.testing.assert_close(a_bad.grad, a_ok.grad)
    parts = attention_mse_loss(a[:1], b[:1], mask[:1], 3) + attention_mse_loss(a[1:], b[1:], mask[1:], 3)
    assert parts.item() == pytest.approx(ok.item(), abs=1e-12)


def test_attention_mse_heads_averaged_when_counts_differ():
    # student 2 heads [[1,0],[1,0]] and [[0,1],[0,1]] -> average [[.5,.5],[.5,.5]]; teacher 1 head [[1,0],[0,1]]
    # squared errors .25 everywhere -> .25
    student = tt([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    teacher = tt([[[[1.0, 0.0], [0.0, 1.0]]]])
    with pytest.raises(ValueError, match="average_heads=True"):
        attention_mse_loss(student, teacher)
    assert attention_mse_loss(student, teacher, average_heads=True).item() == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------------------------
# random inputs against the references, with masks, temperature and num_items_in_batch
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("num_items", [None, 7])
def test_token_losses_match_reference(temperature, num_items):
    rng = random.Random(0)
    S, T = rand_nested((3, 4, 5), rng, 2.0), rand_nested((3, 4, 5), rng, 2.0)
    s, t, mask = tt(S), tt(T), torch.tensor(MASK)
    cases = [
        (hidden_kl_loss(s, t, mask, temperature, num_items), py_token_loss(lambda a, b: py_token_kl(a, b, temperature), S, T, MASK, num_items)),
        (hidden_mse_loss(s, t, mask, num_items), py_token_loss(py_token_mse, S, T, MASK, num_items)),
        (hidden_cosine_loss(s, t, mask, num_items), py_token_loss(py_token_cos, S, T, MASK, num_items)),
    ]
    for got, expected in cases:
        assert got.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_similarity_kl_matches_reference_unequal_widths(temperature):
    rng = random.Random(1)
    S, T = rand_nested((3, 4, 3), rng, 1.5), rand_nested((3, 4, 6), rng, 1.5)
    got = similarity_kl_loss(tt(S), tt(T), torch.tensor(MASK), temperature)
    assert got.item() == pytest.approx(py_similarity_kl(S, T, MASK, temperature), abs=1e-12)
    got = similarity_kl_loss(tt(S), tt(T), torch.tensor(MASK), temperature, num_items_in_batch=5)
    assert got.item() == pytest.approx(py_similarity_kl(S, T, MASK, temperature, num_items=5), abs=1e-12)


def test_attention_mse_matches_reference():
    rng = random.Random(2)
    A, B_ = rand_attention(3, 2, 4, rng), rand_attention(3, 2, 4, rng)
    got = attention_mse_loss(tt(A), tt(B_), torch.tensor(MASK))
    assert got.item() == pytest.approx(py_attention_mse(A, B_, MASK), abs=1e-12)
    got = attention_mse_loss(tt(A), tt(B_), torch.tensor(MASK), num_items_in_batch=6)
    assert got.item() == pytest.approx(py_attention_mse(A, B_, MASK, num_items=6), abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# masking, gradients, accumulation, dtypes, errors
# ----------------------------------------------------------------------------------------------------------------
CALLS = {
    "kl": lambda s, t, m, n=None: hidden_kl_loss(s, t, m, 2.0, n),
    "similarity_kl": lambda s, t, m, n=None: similarity_kl_loss(s, t, m, 1.0, n),
    "mse": lambda s, t, m, n=None: hidden_mse_loss(s, t, m, n),
    "cosine": lambda s, t, m, n=None: hidden_cosine_loss(s, t, m, n),
    "cls": lambda s, t, m, n=None: cls_vector_loss(s, t, "kl", 1.0, m, n),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_padding_values_leak_into_neither_value_nor_gradient(name):
    torch.manual_seed(0)
    s = torch.randn(2, 4, 6, dtype=DT)
    t = torch.randn(2, 4, 6, dtype=DT)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    s_bad, t_bad = s.clone(), t.clone()
    s_bad[0, 3], t_bad[1, 2:] = float("nan"), float("inf")
    s_bad = s_bad.requires_grad_()
    s_ok = s.clone().requires_grad_()
    bad = CALLS[name](s_bad, t_bad, mask)
    ok = CALLS[name](s_ok, t, mask)
    assert torch.isfinite(bad) and bad.item() == pytest.approx(ok.item(), abs=1e-12)
    bad.backward()
    ok.backward()
    assert torch.isfinite(s_bad.grad).all()
    torch.testing.assert_close(s_bad.grad, s_ok.grad)
    if name != "cls":
        assert (s_bad.grad[0, 3] == 0).all() and (s_bad.grad[1, 2:] == 0).all()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_micro_batches_with_num_items_sum_to_the_full_batch(name):
    torch.manual_seed(1)
    s = torch.randn(4, 3, 5, dtype=DT, requires_grad=True)
    t = torch.randn(4, 3, 5, dtype=DT)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])  # sequence 3 is not an item: 3 items
    full = CALLS[name](s, t, mask)
    (g_full,) = torch.autograd.grad(full, s)
    parts = CALLS[name](s[:2], t[:2], mask[:2], 3) + CALLS[name](s[2:], t[2:], mask[2:], 3)
    (g_parts,) = torch.autograd.grad(parts, s)
    assert parts.item() == pytest.approx(full.item(), abs=1e-12)
    torch.testing.assert_close(g_parts, g_full)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_all_masked_is_zero_with_finite_gradients(name):
    s = torch.randn(2, 3, 4, dtype=DT, requires_grad=True)
    loss = CALLS[name](s, torch.randn(2, 3, 4, dtype=DT), torch.zeros(2, 3, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_teacher_gets_no_gradient_and_equal_features_give_zero(name):
    h = torch.randn(2, 3, 4, dtype=DT)
    teacher = h.clone().requires_grad_()
    loss = CALLS[name](h.clone().requires_grad_(), teacher, None)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert teacher.grad is None


def test_mse_gradient_by_hand():
    # one sequence of 2 valid tokens, H = 2: d/ds = 2 (s - t) / H / 2 tokens; with num_items 2: a further / 2
    s = tt([[[1.0, 3.0], [0.0, 0.0]]], requires_grad=True)
    t = tt([[[0.0, 1.0], [2.0, 0.0]]])
    hidden_mse_loss(s, t, num_items_in_batch=2).backward()
    torch.testing.assert_close(s.grad, tt([[[0.25, 0.5], [-0.5, 0.0]]]))


def test_hidden_kl_gradient_is_softmax_difference():
    # d KL(p_t || softmax(s / T)) / ds = (softmax(s / T) - p_t) / T for one token
    s = tt([[[0.3, -0.2, 1.0]]], requires_grad=True)
    t = [0.5, 0.1, -1.0]
    hidden_kl_loss(s, tt([[t]]), temperature=2.0).backward()
    p_s, p_t = py_softmax([0.3, -0.2, 1.0], 2.0), py_softmax(t, 2.0)
    expected = [(a - b) / 2.0 for a, b in zip(p_s, p_t)]
    torch.testing.assert_close(s.grad[0, 0], tt(expected))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast(dtype):
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    for name, fn in CALLS.items():
        low = fn(s.to(dtype), t.to(dtype), None)
        assert low.dtype == torch.float32, name
        assert low.item() == pytest.approx(fn(s.to(dtype).float(), t.to(dtype).float(), None).item(), rel=1e-5), name


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="project the student to the teacher's width"):
        hidden_mse_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
        hidden_kl_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="batch and length differ"):
        similarity_kl_loss(torch.randn(2, 3, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\(batch, length, hidden\)"):
        similarity_kl_loss(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        hidden_kl_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        cls_vector_loss(torch.randn(2, 3), torch.randn(2, 3), "l1")
    with pytest.raises(ValueError, match=r"\(batch, heads, length, length\)"):
        attention_mse_loss(torch.randn(2, 3, 3), torch.randn(2, 3, 3))
