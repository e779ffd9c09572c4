"""Training losses for late-interaction (ColBERT) and single-vector (DPR) retrievers.

Batch layout shared by every loss here: ``B`` queries and ``B * nway`` passages, grouped per query,
so passages ``i*nway ... (i+1)*nway - 1`` belong to query ``i`` and the first of each group is its
positive (the colbert-ai convention for triples, ``nway == 2``, and n-way tuples).

Written by hand (a few tensor lines each) because the scoring must match our encoder's MaxSim
exactly; the optimisation around them is transformers' Trainer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Score given to padded document positions before the max: low enough never to win, finite so that a
# fully padded document yields a finite (very low) score instead of NaN gradients.
_PAD_SCORE = -1e4


def maxsim_scores(
    Q: torch.Tensor,
    D: torch.Tensor,
    d_mask: torch.Tensor,
    q_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """All-pairs late-interaction scores: ``[B, Lq, d] x [N, Ld, d] -> [B, N]``.

    ``s(q, p) = sum_i max_j <q_i, p_j>`` over query tokens ``i`` (those with ``q_mask`` true; all of
    them when ``q_mask`` is None, as ColBERT's [MASK]-augmented queries use every position) and
    document tokens ``j`` with ``d_mask`` true.
    """
    sim = torch.einsum("bid,njd->bnij", Q, D)
    sim = sim.masked_fill(~d_mask.bool()[None, :, None, :], _PAD_SCORE)
    best = sim.max(dim=-1).values  # [B, N, Lq]
    if q_mask is not None:
        best = best * q_mask.to(best.dtype)[:, None, :]
    return best.sum(dim=-1)


def group_scores(scores: torch.Tensor, nway: int) -> torch.Tensor:
    """From all-pairs scores ``[B, B*nway]`` take each query's own group: ``[B, nway]``."""
    B = scores.size(0)
    if scores.size(1) != B * nway:
        raise ValueError(f"expected {B * nway} passages for {B} queries with nway={nway}, got {scores.size(1)}")
    idx = torch.arange(B, device=scores.device)[:, None] * nway + torch.arange(nway, device=scores.device)
    return scores.gather(1, idx)


def pairwise_softmax_ce(group: torch.Tensor) -> torch.Tensor:
    """ColBERT-XM eq. 6: ``-log softmax`` of the positive (column 0) within its own group ``[B, nway]``.

    With ``nway == 2`` this is the pairwise softmax cross-entropy over (positive, hard negative).
    """
    labels = torch.zeros(group.size(0), dtype=torch.long, device=group.device)
    return F.cross_entropy(group, labels)


def in_batch_softmax_ce(scores: torch.Tensor, nway: int, include_own_negatives: bool = False) -> torch.Tensor:
    """ColBERT-XM eq. 7: sampled softmax of each query's positive against the passages of the batch.

    ``scores`` is ``[B, B*nway]``. The candidates of query ``i`` are its positive and every passage of
    the other queries (their positives and hard negatives). Its own hard negatives are left out by
    default, as colbert-ai's ``compute_ib_loss`` does (they are already in the pairwise term).
    """
    B, N = scores.shape
    positives = torch.arange(B, device=scores.device) * nway
    if include_own_negatives:
        return F.cross_entropy(scores, positives)
    cols = torch.arange(N, device=scores.device)
    own_group = (cols[None, :] // nway) == torch.arange(B, device=scores.device)[:, None]
    own_negative = own_group & (cols[None, :] != positives[:, None])
    return F.cross_entropy(scores.masked_fill(own_negative, float("-inf")), positives)


def colbert_xm_loss(scores: torch.Tensor, nway: int, in_batch: bool = True) -> torch.Tensor:
    """ColBERT-XM eq. 8: pairwise softmax CE plus in-batch sampled softmax CE (summed, as in colbert-ai)."""
    loss = pairwise_softmax_ce(group_scores(scores, nway))
    if in_batch:
        loss = loss + in_batch_softmax_ce(scores, nway)
    return loss


def kl_distillation(group: torch.Tensor, teacher: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ColBERTv2 §3.2: ``KL(softmax(alpha * teacher) || softmax(student))`` over each n-way tuple.

    ``group`` and ``teacher`` are ``[B, nway]``; averaged over the batch (``batchmean``).
    """
    if group.shape != teacher.shape:
        raise ValueError(f"student scores {tuple(group.shape)} and teacher scores {tuple(teacher.shape)} differ")
    target = F.log_softmax(alpha * teacher.to(group.dtype), dim=-1)
    student = F.log_softmax(group, dim=-1)
    return F.kl_div(student, target, reduction="batchmean", log_target=True)


def distillation_loss(
    scores: torch.Tensor, teacher: torch.Tensor, alpha: float = 1.0, in_batch: bool = True
) -> torch.Tensor:
    """ColBERTv2 recipe: KL distillation over the n-way tuples plus the in-batch negatives term."""
    nway = teacher.size(1)
    loss = kl_distillation(group_scores(scores, nway), teacher, alpha)
    if in_batch:
        loss = loss + in_batch_softmax_ce(scores, nway)
    return loss


class ScoreScale(torch.nn.Module):
    """A learned temperature: scores times exp(log_scale), starting at 1.

    Learned query-token weights average 1 per query (colxm.modeling.query_weights), so they cannot
    sharpen the softmax by growing all together; this scale does that instead, leaving the weights
    to learn only which tokens matter. A training parameter: it is not part of the saved model.
    """

    def __init__(self):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores * self.log_scale.exp()


def recipe_loss(scores: torch.Tensor, nway: int, in_batch: bool = True, alpha: float = 1.0,
                teacher: torch.Tensor | None = None) -> torch.Tensor:
    """ColBERTv2's distillation loss when teacher scores are given, else ColBERT-XM's loss."""
    if teacher is not None:
        return distillation_loss(scores, teacher, alpha, in_batch)
    return colbert_xm_loss(scores, nway, in_batch)


def dense_in_batch_loss(q: torch.Tensor, d: torch.Tensor, nway: int, temperature: float = 0.05) -> torch.Tensor:
    """DPR-XM: cosine similarity of pooled vectors, softmax over every passage in the batch.

    ``q`` is ``[B, h]``, ``d`` is ``[B*nway, h]``; each query's positive is ``d[i*nway]`` and every other
    passage (hard negatives included) is a negative. Scores are divided by ``temperature``.
    """
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / temperature
    labels = torch.arange(q.size(0), device=q.device) * nway
    return F.cross_entropy(scores, labels)
