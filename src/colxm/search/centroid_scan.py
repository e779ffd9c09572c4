"""Each query token's best centroids without faiss: an int8 copy of the centroid table kept in the
order of coarse lists (a small spherical k-means over the centroids), so a query scans only the
lists that any of its tokens probes, with one integer matmul.

Why our own and not faiss's inverted file: faiss held a float32 copy of the table (16.8 MB at
32,768 centroids) plus its library and BLAS buffers (~18 MB more of search RSS); this copy is 4.2 MB.
Scanning the union of the tokens' lists for every token also finds at least what per-token
probing finds.
"""
from __future__ import annotations

import numpy as np
import torch

from colxm.index.centroid_table import CentroidTable, int8_rows
from colxm.search.memory import release_free_heap, scratch

GROUP = 64  # scanned centroids per group when narrowing to each token's best
_INT_MIN = torch.iinfo(torch.int32).min
_ROWS = 4096  # table rows converted to float32 at once while building
_CHUNK = 8192  # scanned rows per integer matmul


class CentroidScan:
    """Coarse lists over a :class:`CentroidTable` and the int8 scan over them."""

    def __init__(self, table: CentroidTable, lists: int | None = None, iters: int = 5, seed: int = 0):
        """``lists``: coarse lists (default K // 64, at least 1)."""
        K, dim = table.shape
        self.num_lists = max(1, min(K, lists or K // 64))
        self.coarse, assign = _spherical_kmeans(table, self.num_lists, iters, seed)
        order = torch.argsort(assign, stable=True)
        self.perm = order  # scan position -> centroid id
        counts = torch.bincount(assign, minlength=self.num_lists)
        self.offsets = np.zeros(self.num_lists + 1, dtype=np.int64)
        np.cumsum(counts.numpy(), out=self.offsets[1:])
        # one scale for every row, so that integer scores rank a token's centroids directly
        scale = self.scale = table.abs_max() / 127 or 1.0
        self.c8 = torch.empty((K, dim), dtype=torch.int8)
        for a in range(0, K, _ROWS):
            ids = order[a:a + _ROWS]
            self.c8[a:a + ids.shape[0]] = torch.round(table.rows(ids) / scale).clamp_(-127, 127).to(torch.int8)
        release_free_heap()  # the build's float32 blocks sit below what stays

    def positions(self, Q: torch.Tensor, nprobe: int) -> np.ndarray | None:
        """Scan positions of the lists probed by any token (each token's ``nprobe`` best lists);
        None = every centroid (nprobe 0, or at least as many as there are lists)."""
        if nprobe <= 0 or nprobe >= self.num_lists:
            return None
        best = torch.topk(Q @ self.coarse.T, nprobe, dim=1).indices
        lists = np.unique(best.numpy())
        starts, ends = self.offsets[lists], self.offsets[lists + 1]
        lens = ends - starts
        pos = np.arange(int(lens.sum()), dtype=np.int64)
        pos += np.repeat(starts - (np.cumsum(lens) - lens), lens)
        return pos

    def top(self, Q: torch.Tensor, r: int, nprobe: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores float32, centroid ids int64), each [Lq, <= r]: each token's r best scanned
        centroids, best first (fewer when fewer were scanned). Scores are the int8 products
        rescaled: within ~1e-3 of the exact ones, which only rank candidates (the exact stage
        scores documents on the stored centroids)."""
        lq, dim = Q.shape
        pos = self.positions(Q, nprobe)
        n = self.c8.shape[0] if pos is None else pos.size
        q8, q_scale = (torch.from_numpy(a) for a in int8_rows(Q.numpy()))
        q_scale = q_scale[:, None]
        # _CHUNK scanned rows at a time (gathered when probing: a copy of all would be up to half
        # the table); each chunk keeps only its g best groups of 64 by their maxima, as the r best
        # of all lie in the r groups with the best maxima (scores: int8 products, each row in
        # units of its own token's scale)
        nchunks = -(-n // _CHUNK)
        g = min(r, _CHUNK // GROUP)
        cand = torch.from_numpy(scratch("scan_cand", (lq, nchunks, g, GROUP), np.int32))
        cand.fill_(_INT_MIN)  # chunks with fewer than g groups leave the rest empty
        gids = torch.from_numpy(scratch("scan_cand_groups", (lq, nchunks, g), np.int64))
        gids.zero_()
        for c in range(nchunks):
            a, b = c * _CHUNK, min(n, (c + 1) * _CHUNK)
            w = -(-(b - a) // GROUP) * GROUP
            rows = torch.from_numpy(scratch("scan_rows", (w, dim), np.int8))
            if pos is None:
                rows[: b - a] = self.c8[a:b]
            else:
                torch.index_select(self.c8, 0, torch.from_numpy(pos[a:b]), out=rows[: b - a])
            rows[b - a:] = 0
            part = torch.from_numpy(scratch("scan_part", (lq, w), np.int32))
            torch._int_mm(q8, rows.T, out=part)
            part[:, b - a:] = _INT_MIN
            by_group = part.view(lq, w // GROUP, GROUP)
            k = min(g, w // GROUP)
            top_groups = torch.topk(by_group.amax(2), k, dim=1).indices
            cand[:, c, :k] = torch.gather(by_group, 1, top_groups[:, :, None].expand(lq, k, GROUP))
            gids[:, c, :k] = top_groups + a // GROUP
        best, found = torch.topk(cand.view(lq, -1), min(r, n), dim=1)
        at = torch.gather(gids.view(lq, -1), 1, found // GROUP) * GROUP + found % GROUP  # scanned row
        if pos is not None:
            at = torch.from_numpy(pos)[at]
        return best.to(torch.float32).mul_(q_scale * self.scale), self.perm[at]


def _spherical_kmeans(table: CentroidTable, k: int, iters: int, seed: int):
    """(centroids float32 [k, dim] unit rows, assignment int64 [K]) of the table's rows by inner
    product, seeded; rows are converted to float32 a block at a time (no float32 table is held)."""
    K = table.shape[0]
    g = torch.Generator().manual_seed(seed)
    cent = table.rows(torch.randperm(K, generator=g)[:k].sort().values)
    assign = torch.empty(K, dtype=torch.int64)
    for it in range(iters + 1):
        sums = torch.zeros_like(cent)
        for a in range(0, K, _ROWS):
            block = table.rows(torch.arange(a, min(K, a + _ROWS)))
            assign[a:a + block.shape[0]] = torch.argmax(block @ cent.T, dim=1)
            sums.index_add_(0, assign[a:a + block.shape[0]], block)
        if it == iters:
            break
        norms = sums.norm(dim=1, keepdim=True)
        cent = torch.where(norms > 0, sums / norms.clamp_min(1e-30), cent)  # an empty list keeps its seed
    return cent, assign
