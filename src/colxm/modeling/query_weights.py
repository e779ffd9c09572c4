"""Learned query-token weights: score(q, d) = sum_i w_i max_j <q_i, d_j> (a colxm extension).

Plain ColBERT gives every query token the same say, so function words, punctuation and question
words ("what", "which", "?") add noise to the sum. A linear head reads each query token's backbone
output (its direction and the log of its norm) and gives it a weight w_i = softplus(a . x_i + b),
scaled so that the weights of one query average 1 (the scale of scores, and what the searcher's
thresholds see, stays that of plain ColBERT). The head starts at w_i = 1, i.e. plain ColBERT.

Trained on English pairs alone on top of untrained e5-small, it lifted XQuAD-R in all seven of its
languages but lowered the Debian sets (benchmarks/README.md → Training → Session 12).
Documents are untouched: an index built without the head serves queries encoded with it.
The weights scale the query vectors (w_i q_i), so every MaxSim path scores them unchanged.
Stored in the HF_ColBERT folder as ``colxm_query_weights.score.weight`` [1, hidden + 1] and
``colxm_query_weights.score.bias`` [1]; colbert-ai ignores these tensors (and then scores plain ColBERT).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from colxm.errors import CheckpointError

STATE_PREFIX = "colxm_query_weights."
_UNIT_BIAS = math.log(math.e - 1.0)  # softplus(_UNIT_BIAS) == 1


class QueryTokenWeights(nn.Module):
    """One weight per query token from the backbone output ``H`` [B, L, hidden]."""

    def __init__(self, hidden: int):
        super().__init__()
        self.score = nn.Linear(hidden + 1, 1)
        with torch.no_grad():
            self.score.weight.zero_()
            self.score.bias.fill_(_UNIT_BIAS)

    @property
    def hidden(self) -> int:
        return self.score.in_features - 1

    def forward(self, H: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] weights, averaging 1 over the positions that score (``keep``; all when None), 0 elsewhere."""
        H = H.float()
        norm = H.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        features = torch.cat([H / norm, norm.log()], dim=-1)
        w = F.softplus(self.score(features).squeeze(-1))
        keep = torch.ones_like(w, dtype=torch.bool) if keep is None else keep
        w = w * keep.to(w.dtype)
        count = keep.sum(dim=1, keepdim=True).clamp_min(1).to(w.dtype)
        return w * count / w.sum(dim=1, keepdim=True).clamp_min(1e-6)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors as stored in a checkpoint (names with :data:`STATE_PREFIX`)."""
        return {STATE_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], hidden: int) -> "QueryTokenWeights | None":
        """The head stored in a checkpoint's tensors, or None when there is none."""
        own = {k[len(STATE_PREFIX):]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        if not own:
            return None
        head = cls(hidden)
        expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in own.items()}
        if got != expected:
            raise CheckpointError(f"query-weight tensors {got} do not fit a backbone of hidden size {hidden} "
                                  f"(expected {expected}); the checkpoint is damaged or mixes two models")
        head.load_state_dict({k: v.float() for k, v in own.items()})
        return head
