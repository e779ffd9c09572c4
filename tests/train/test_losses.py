"""Each loss against a direct computation with Python floats on a hand-sized example."""
import math

import pytest
import torch

from colxm.train import losses

# 2 queries x 2 tokens, 4 passages (nway=2: q0 -> p0+, p1-; q1 -> p2+, p3-) x up to 3 tokens, dim 2.
Q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [1.0, 0.0]]])
D = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
        [[0.8, 0.6], [9.0, 9.0], [0.0, 0.0]],  # 2nd token is padding: must never win
        [[0.6, 0.8], [0.0, -1.0], [0.0, 0.0]],
        [[-1.0, 0.0], [0.0, 0.5], [0.5, 0.5]],
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)


def hand_scores():
    out = []
    for q in Q.tolist():
        row = []
        for d, m in zip(D.tolist(), MASK.tolist()):
            toks = [t for t, keep in zip(d, m) if keep]
            row.append(sum(max(qi[0] * t[0] + qi[1] * t[1] for t in toks) for qi in q))
        out.append(row)
    return out


def lse(xs):
    return math.log(sum(math.exp(x) for x in xs))


def test_maxsim_scores_match_hand_computation():
    S = losses.maxsim_scores(Q, D, MASK)
    assert S.shape == (2, 4)
    assert sum(S.tolist(), []) == pytest.approx(sum(hand_scores(), []), abs=1e-6)
    # q0 vs p0: max(1,0)+max(0,1) = 2 ; q0 vs p1 (padding ignored): 0.8 + 0.6 = 1.4
    assert S[0, 0].item() == pytest.approx(2.0) and S[0, 1].item() == pytest.approx(1.4)


def test_query_mask_drops_tokens():
    S = losses.maxsim_scores(Q, D, MASK, q_mask=torch.tensor([[1, 0], [1, 1]]))
    h = hand_scores()
    assert S[0, 0].item() == pytest.approx(1.0)  # only q0's first token: max(1, 0)
    assert S[1].tolist() == pytest.approx(h[1], abs=1e-6)


def test_colbert_xm_loss_is_pairwise_plus_in_batch():
    s = hand_scores()
    # eq. 6: pairwise softmax CE over (positive, hard negative)
    pair = [-(s[0][0] - lse([s[0][0], s[0][1]])), -(s[1][2] - lse([s[1][2], s[1][3]]))]
    # eq. 7: positive vs every passage of the other queries (own hard negative left out)
    ib = [-(s[0][0] - lse([s[0][0], s[0][2], s[0][3]])), -(s[1][2] - lse([s[1][2], s[1][0], s[1][1]]))]
    S = losses.maxsim_scores(Q, D, MASK)
    assert losses.pairwise_softmax_ce(losses.group_scores(S, 2)).item() == pytest.approx(sum(pair) / 2, abs=1e-5)
    assert losses.in_batch_softmax_ce(S, 2).item() == pytest.approx(sum(ib) / 2, abs=1e-5)
    assert losses.colbert_xm_loss(S, 2).item() == pytest.approx((sum(pair) + sum(ib)) / 2, abs=1e-5)
    full = [-(s[i][2 * i] - lse(s[i])) for i in range(2)]
    assert losses.in_batch_softmax_ce(S, 2, include_own_negatives=True).item() == pytest.approx(sum(full) / 2, abs=1e-5)


def test_kl_distillation_matches_definition():
    s = hand_scores()
    teacher = torch.tensor([[3.0, 1.0], [0.5, 2.0]])
    alpha = 0.5
    kl = 0.0
    for i in range(2):
        st = [s[i][2 * i], s[i][2 * i + 1]]
        t = [alpha * x for x in teacher[i].tolist()]
        pt = [math.exp(x - lse(t)) for x in t]
        ps = [math.exp(x - lse(st)) for x in st]
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    S = losses.maxsim_scores(Q, D, MASK)
    got = losses.kl_distillation(losses.group_scores(S, 2), teacher, alpha)
    assert got.item() == pytest.approx(kl / 2, abs=1e-5)
    ib = losses.in_batch_softmax_ce(S, 2).item()
    assert losses.distillation_loss(S, teacher, alpha).item() == pytest.approx(kl / 2 + ib, abs=1e-5)


def test_kl_is_zero_when_student_equals_teacher():
    g = torch.tensor([[1.0, -2.0, 0.3]])
    assert losses.kl_distillation(g, g.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_dense_in_batch_loss_matches_definition():
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    d = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    t = 0.1
    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / math.hypot(*a) / math.hypot(*b)
    total = 0.0
    for i, qi in enumerate(q.tolist()):
        row = [cos(qi, dj) / t for dj in d.tolist()]
        total += -(row[2 * i] - lse(row))
    assert losses.dense_in_batch_loss(q, d, nway=2, temperature=t).item() == pytest.approx(total / 2, abs=1e-5)


def test_group_scores_rejects_wrong_shape():
    with pytest.raises(ValueError, match="nway=3"):
        losses.group_scores(torch.zeros(2, 4), 3)
