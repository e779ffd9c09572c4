"""Training the head alone (projection and / or query-token weights) over cached backbone outputs
(the whole backbone frozen).

When nothing below the projection is trained, the backbone's output for a text never changes, so
it is computed once per distinct text (in eval mode, without dropout) and every step only runs the
projection and the loss. On a CPU this turns a run from hours into minutes: the backbone's forward
pass was almost all of each step's time. The optimisation itself stays transformers' Trainer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from colxm.modeling.model import project_documents, project_queries
from colxm.train import losses
from colxm.train.data import NwayTuple, Triple

log = logging.getLogger(__name__)


@dataclass
class CachedTexts:
    """Backbone outputs of distinct texts: rows ``offsets[i]:offsets[i+1]`` of ``states`` are text i's
    positions; ``keep`` marks those that count in MaxSim."""

    states: torch.Tensor  # [total positions, hidden] float16
    keep: torch.Tensor  # [total positions] bool: the positions that score
    offsets: np.ndarray  # [n + 1] int64

    def padded(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[len(rows), L, hidden]`` float32 states and ``[len(rows), L]`` keep mask, zero-padded."""
        lengths = [int(self.offsets[r + 1] - self.offsets[r]) for r in rows]
        out = torch.zeros(len(rows), max(lengths), self.states.shape[1])
        keep = torch.zeros(len(rows), max(lengths), dtype=torch.bool)
        for i, (r, n) in enumerate(zip(rows, lengths)):
            start = int(self.offsets[r])
            out[i, :n] = self.states[start:start + n].float()
            keep[i, :n] = self.keep[start:start + n]
        return out, keep


@torch.inference_mode()
def cache_texts(net: nn.Module, tokenize: Callable, texts: Sequence[str], *, documents: bool,
                batch_size: int = 64, show_progress: bool = False) -> CachedTexts:
    """Run the frozen backbone once over ``texts`` (length-sorted batches) and keep its outputs."""
    from tqdm.auto import tqdm

    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")
    parts: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(texts)
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc="backbone outputs", disable=not show_progress):
        idx = order[start:start + batch_size]
        tok = tokenize([texts[i] for i in idx])
        ids, att = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        hidden = net.hidden(ids, att).half().cpu()
        real = att.bool().cpu()
        keep = (net.document_mask(ids) if documents else net.query_mask(ids)).cpu()
        for j, i in enumerate(idx):
            n = int(real[j].sum()) if documents else ids.shape[1]  # queries: every position (query_maxlen)
            parts[i] = (hidden[j, :n], keep[j, :n])
    net.train(was_training)
    lengths = [p[0].shape[0] for p in parts]
    return CachedTexts(states=torch.cat([p[0] for p in parts]), keep=torch.cat([p[1] for p in parts]),
                       offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


@dataclass
class CachedExample:
    """One training example as rows of the query and document caches."""

    query: int
    passages: list[int]
    scores: list[float] | None = None


def index_examples(examples: Sequence[Triple | NwayTuple]) -> tuple[list[str], list[str], list[CachedExample]]:
    """Distinct query texts, distinct passage texts, and each example as indexes into them."""
    queries: dict[str, int] = {}
    passages: dict[str, int] = {}
    rows = []
    for ex in examples:
        docs = list(ex.passages) if isinstance(ex, NwayTuple) else [ex.positive, ex.negative]
        q = queries.setdefault(ex.query, len(queries))
        p = [passages.setdefault(d, len(passages)) for d in docs]
        rows.append(CachedExample(q, p, list(ex.scores) if isinstance(ex, NwayTuple) else None))
    return list(queries), list(passages), rows


class CachedCollator:
    """Pads the cached outputs of a batch's queries and passages."""

    def __init__(self, queries: CachedTexts, passages: CachedTexts):
        self.queries = queries
        self.passages = passages

    def __call__(self, batch: Sequence[CachedExample]) -> dict[str, torch.Tensor]:
        q, q_keep = self.queries.padded([ex.query for ex in batch])
        d, d_keep = self.passages.padded([p for ex in batch for p in ex.passages])
        out = {"q_states": q, "q_keep": q_keep, "d_states": d, "d_keep": d_keep}
        if batch[0].scores is not None:
            out["teacher_scores"] = torch.tensor([ex.scores for ex in batch], dtype=torch.float32)
        return out


class CachedHeadLossModule(nn.Module):
    """ColBERTModel's projection and normalisation (``project_queries`` / ``project_documents``) on
    cached backbone outputs, plus the recipe's loss. Scores match ColbertLossModule's for a frozen backbone in eval mode (tested).
    """

    accepts_loss_kwargs = False

    def __init__(self, linear: nn.Linear, nway: int, in_batch: bool = True, distillation_alpha: float = 1.0,
                 query_weights: nn.Module | None = None, learn_temperature: bool = False):
        super().__init__()
        self.linear = linear
        self.query_weights = query_weights
        self.score_scale = losses.ScoreScale() if learn_temperature else None
        self.nway = nway
        self.in_batch = in_batch
        self.alpha = distillation_alpha

    def forward(self, q_states, q_keep, d_states, d_keep, teacher_scores=None):
        Q = project_queries(self.linear, q_states, q_keep, self.query_weights)
        D = project_documents(self.linear, d_states, d_keep)
        scores = losses.maxsim_scores(Q.float(), D.float(), d_keep)
        if self.score_scale is not None:
            scores = self.score_scale(scores)
        return {"loss": losses.recipe_loss(scores, self.nway, self.in_batch, self.alpha, teacher_scores)}
