"""Exact k-nearest-neighbour search for the distance-based detectors.

:class:`NeighborIndex` holds a training matrix and answers two questions:

* ``query(X, k)``: the ``k`` nearest training rows of each row of ``X`` (Euclidean);
* ``query_self(k)``: the same for every training row, leaving the row itself out.

How it works
------------
1. **Duplicates are collapsed.** Identical training rows are stored once, with their row
   indices (real tabular sets are full of copies: the 619,326 rows of ADBench ``donors``
   hold 35,421 distinct ones). A group of ``c`` copies fills up to ``c`` neighbour slots,
   reported as its rows in index order. Leaving a row "itself" out removes that row only,
   by index: its copies remain neighbours at distance 0, as in scikit-learn. Identical
   query rows are searched once.
2. **Candidates** for the ``k`` nearest come from FAISS (``IndexFlatL2``: float32 brute
   force on data centred at the training mean) or from a scipy kd-tree, which is far
   faster on low-dimensional data (always used up to :data:`KDTREE_MAX_DIM` features;
   between that and :data:`PROBE_MAX_DIM` features both are timed on a sample of the
   training rows at the first search and the faster one is kept; the choice changes
   speed, never results).
   ``index="hnsw"`` takes candidates from a FAISS HNSW graph instead (approximate).
3. **Refinement.** The candidates' squared distances are recomputed in float64 as
   ``sum((x - y) ** 2)`` and sorted by (distance, group), so that results do not depend
   on float32 rounding, on the backend, on the number of threads or on which rows were
   queried together (a row scored alone gets bit-for-bit the result it gets in a batch).
4. **Certification** (exact mode). A bound on the float32 rounding error proves, row by
   row, that no training row outside the candidates is at or below the k-th distance.
   Rows where the proof fails (ties or near-ties at the cut-off) are searched again over
   every training row, in float64 with its own error bound. Results are therefore the
   exact k nearest; ties at the k-th distance go to the group whose first row comes first.

Memory is bounded for any size: queries run in chunks whose temporary arrays stay under
``memory_budget`` bytes (256 MiB by default), and FAISS tiles its own distance blocks
(4,096 x 1,024); no ``n_query x n_train`` matrix is ever built.

Threads: FAISS (OpenMP) and the kd-tree use :func:`set_num_threads` threads (default:
every core) for large searches and one thread for small ones, where start-up costs more
than it saves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from ..errors import InputError, ParamError

DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: up to this many features the exact search always uses a kd-tree.
KDTREE_MAX_DIM = 8
#: up to this many features (and from PROBE_MIN_ROWS distinct rows) kd-tree and FAISS
#: are both timed on PROBE_QUERIES training rows at the first search; above it FAISS is used.
PROBE_MAX_DIM = 64
PROBE_MIN_ROWS = 2048
PROBE_QUERIES = 128
#: extra FAISS candidates per query beyond the k (+1) needed, to absorb float32 rounding.
FLAT_MARGIN = 5
#: below this many multiply-adds (queries x training rows x features) search is single-threaded.
SMALL_WORK = 1e7

IndexKind = Literal["flat", "hnsw"]
#: ``candidates(Q, need)`` of a backend: (candidate groups, at least ``need`` per row unless
#: there are fewer groups; a function giving, from the squared k-th distance, a lower bound
#: on the squared distance of every group left out, or None when there is no such bound).
Candidates = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]

_UNIT32 = 2.0**-24  # unit round-off of float32
_UNIT64 = 2.0**-53
_num_threads: int | None = None


# --------------------------------------------------------------------------- threads
def set_num_threads(n: int | None) -> None:
    """Threads for neighbour search (FAISS OpenMP and kd-tree workers); None = all cores."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ParamError(f"the number of threads must be a positive integer or None, got {n!r}.")
    _num_threads = n


def get_num_threads() -> int:
    """Threads a large neighbour search uses."""
    return _num_threads or (os.cpu_count() or 1)


def _threads_for(work: float) -> int:
    return 1 if work < SMALL_WORK else get_num_threads()


@contextmanager
def _faiss_settings(n_threads: int) -> Iterator[None]:
    """FAISS with ``n_threads`` OpenMP threads and its BLAS path from 20 queries on.

    faiss-cpu 1.15 computes distances pair by pair below 128,000 queries, which is about
    twice as slow as its GEMM path at our sizes. Both settings are restored afterwards.
    """
    import faiss

    threads, blas = faiss.omp_get_max_threads(), faiss.cvar.distance_compute_blas_threshold
    faiss.omp_set_num_threads(n_threads)
    faiss.cvar.distance_compute_blas_threshold = 20
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)
        faiss.cvar.distance_compute_blas_threshold = blas


# --------------------------------------------------------------------------- index
class NeighborIndex:
    """Exact (or, with ``index="hnsw"``, approximate) Euclidean k-NN over a training matrix.

    ``X`` is the training matrix (n_train, d), finite. Both queries return ``(dist, idx)``:
    float64 Euclidean distances of shape (n, k), ascending, and the int64 training-row
    indices they belong to.
    """

    def __init__(
        self,
        X: np.ndarray,
        *,
        index: IndexKind = "flat",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 64,
    ) -> None:
        if index not in ("flat", "hnsw"):
            raise ParamError(f"index must be 'flat' or 'hnsw', got {index!r}.")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InputError(f"the training matrix must be 2-D and non-empty, got {X.shape}.")
        self.n_train, self.dim = X.shape
        self.memory_budget = max(1, int(memory_budget))
        self.groups = RowGroups(X)
        self.unique = self.groups.unique
        self.n_unique = self.unique.shape[0]
        self.mean = self.unique.mean(axis=0)
        self._backend = _make_backend(self, index, int(hnsw_m), int(hnsw_ef_search))
        self._gemm_cache: _GemmData | None = None

    # ------------------------------------------------------------------ public
    def query(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training rows of each row of ``X``."""
        self._check_k(k, self.n_train, "training rows")
        X = np.asarray(X, dtype=np.float64) + 0.0  # a copy, with -0.0 turned into 0.0
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"queries must have shape (n, {self.dim}), got {X.shape}.")
        dist = np.empty((X.shape[0], k))
        idx = np.empty((X.shape[0], k), dtype=np.int64)
        step = self._rows_per_chunk(k)
        for lo in range(0, X.shape[0], step):
            distinct, inverse = _distinct_rows(X[lo : lo + step])
            d, grp, rank = self._search(distinct, k, None)
            dist[lo : lo + step] = d[inverse]
            idx[lo : lo + step] = self.groups.rows(grp[inverse], rank[inverse])
        return dist, idx

    def query_self(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest *other* training rows of every training row, (n_train, k)."""
        self._check_k(k, self.n_train - 1, "other training rows (each row leaves itself out)")
        dist = np.empty((self.n_unique, k))
        grp = np.empty((self.n_unique, k), dtype=np.int64)
        rank = np.empty((self.n_unique, k), dtype=np.int64)
        step = self._rows_per_chunk(k + 1)
        for lo in range(0, self.n_unique, step):
            own = np.arange(lo, min(lo + step, self.n_unique))
            dist[own], grp[own], rank[own] = self._search(self.unique[own], k, own)
        return self.groups.expand_self(dist, grp, rank)

    # ------------------------------------------------------------------ search
    def _search(
        self, Q: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest of distinct rows ``Q`` as (distance, group, rank within group).

        ``own`` gives, for a self query, each row's own group (one copy is left out).
        """
        cand, lower = self._backend.candidates(Q, k + (own is not None))
        dist, grp, rank, kth_sq = self._refine(Q, cand, k, own)
        failed = ~np.isfinite(kth_sq)  # fewer than k candidates (HNSW can return fewer)
        if cand.shape[1] < self.n_unique and lower is not None:
            failed |= ~(kth_sq < lower(kth_sq))
        bad = np.flatnonzero(failed)
        if bad.size:
            own_bad = None if own is None else own[bad]
            dist[bad], grp[bad], rank[bad] = self._search_all(Q[bad], k, own_bad)
        return dist, grp, rank

    def _refine(
        self, Q: np.ndarray, cand: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact float64 distances of candidate groups (-1 = none), sorted, expanded to k slots.

        Returns distances, groups and ranks within the group for the k slots, and the
        squared k-th distance (inf where the candidates hold fewer than k rows).
        """
        valid = cand >= 0
        cand = np.where(valid, cand, 0)
        sq = exact_sq_dist(Q[:, None, :], self.unique[cand])
        sq[~valid] = np.inf
        cnt = np.where(valid, self.groups.counts[cand], 0)
        if own is not None:
            cnt -= valid & (cand == own[:, None])
        order = _order_by_distance_then_group(sq, cand)
        sq = np.take_along_axis(sq, order, axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        cnt = np.take_along_axis(cnt, order, axis=1)
        pos, rank = _fill_slots(cnt, k)
        short = pos[:, -1] >= cand.shape[1]
        pos = np.minimum(pos, cand.shape[1] - 1)
        d_sq = np.take_along_axis(sq, pos, axis=1)
        kth_sq = np.where(short, np.inf, d_sq[:, -1])
        return np.sqrt(d_sq), np.take_along_axis(cand, pos, axis=1), rank, kth_sq

    def _search_all(
        self, Q: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact, tie-complete search over every training row.

        float64 distances by the GEMM expansion, with their rounding bound, select a
        superset of the groups at or within the k-th distance; the superset is refined.
        Where the GEMM values are exact (integer data), the selection is exact already
        and keeps only the ``k (+1)`` first groups by (distance, group).
        """
        take = min(self.n_unique, k + (own is not None))
        dist = np.empty((Q.shape[0], k))
        grp = np.empty((Q.shape[0], k), dtype=np.int64)
        rank = np.empty((Q.shape[0], k), dtype=np.int64)
        step = max(1, self.memory_budget // (32 * self.n_unique))
        for lo in range(0, Q.shape[0], step):
            part = Q[lo : lo + step]
            sq, err = self._gemm_sq_dist(part)
            rows, cols = np.nonzero(_select(sq, err, take))
            del sq
            cand = _ragged_to_matrix(rows, cols, part.shape[0])
            sub = max(1, self.memory_budget // (cand.shape[1] * (24 * self.dim + 64)))
            for a in range(0, part.shape[0], sub):
                b = min(a + sub, part.shape[0])
                o = None if own is None else own[lo + a : lo + b]
                res = self._refine(part[a:b], cand[a:b], k, o)
                dist[lo + a : lo + b], grp[lo + a : lo + b], rank[lo + a : lo + b] = res[:3]
        return dist, grp, rank

    def _gemm_sq_dist(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 squared distances to every distinct row by GEMM, and per-row error bounds.

        Integer-valued data small enough for every sum to stay below 2**52 are not
        centred: their GEMM values are then exact, and the bound is 0 for integer queries.
        """
        if self._gemm_cache is None:
            self._gemm_cache = _GemmData(self.unique, self.mean)
        g = self._gemm_cache
        Qc = Q - g.shift
        q_sq = np.einsum("ij,ij->i", Qc, Qc)
        sq = Qc @ g.rows.T
        sq *= -2.0
        sq += q_sq[:, None]
        sq += g.norms_sq[None, :]
        bound = np.sqrt(q_sq) + g.max_norm
        err = gemm_error_factor(self.dim, _UNIT64) * bound * bound
        if g.integral:
            exact = (Q == np.round(Q)).all(axis=1) & (q_sq * self.dim < 2.0**52)
            err[exact] = 0.0
        return sq, err

    # ------------------------------------------------------------------ helpers
    def _rows_per_chunk(self, k: int) -> int:
        """Query rows per chunk so that the per-chunk temporaries fit the memory budget."""
        m = min(self.n_unique, k + 1 + FLAT_MARGIN)
        per_row = m * (24 * self.dim + 8 * k + 96)
        return max(1, self.memory_budget // per_row)

    @staticmethod
    def _check_k(k: Any, available: int, what: str) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParamError(f"the number of neighbours must be a positive integer, got {k!r}.")
        if k > available:
            raise InputError(
                f"asked for {k} neighbours but there are only {available} {what}; "
                "use fewer neighbours or more training rows."
            )


# --------------------------------------------------------------------------- exhaustive search
class _GemmData:
    """The training rows as the exhaustive float64 search uses them."""

    def __init__(self, unique: np.ndarray, mean: np.ndarray) -> None:
        norms = np.einsum("ij,ij->i", unique, unique)
        small = norms.max() * unique.shape[1] < 2.0**52
        self.integral = bool(small and (unique == np.round(unique)).all())
        self.shift = np.zeros_like(mean) if self.integral else mean
        self.rows = np.ascontiguousarray(unique - self.shift)
        self.norms_sq = norms if self.integral else np.einsum("ij,ij->i", self.rows, self.rows)
        self.max_norm = float(np.sqrt(self.norms_sq.max()))


def _select(sq: np.ndarray, err: np.ndarray, take: int) -> np.ndarray:
    """Mask of the groups to refine: every group that may be among the ``take`` nearest.

    With an error bound ``err`` the mask holds everything within ``2 err`` of the
    ``take``-th smallest value; rows with exact values (``err == 0``) keep exactly
    ``take`` groups, ties at the cut going to the lower group number.
    """
    tau = np.partition(sq, take - 1, axis=1)[:, take - 1 : take]
    mask = sq <= tau + 2.0 * err[:, None]
    exact = err == 0.0
    if exact.any():
        at = (sq == tau) & exact[:, None]
        mask &= ~at  # exact rows: strictly below the cut
        room = take - mask.sum(axis=1)
        rows, cols = np.nonzero(at)  # row-major: groups ascending within a row
        first = np.searchsorted(rows, rows, side="left")
        keep = np.arange(rows.size) - first < room[rows]
        mask[rows[keep], cols[keep]] = True
    return mask


# --------------------------------------------------------------------------- duplicates
class RowGroups:
    """Identical rows of a matrix gathered into groups, numbered by first occurrence.

    ``unique[g]`` is group ``g``'s row, ``counts[g]`` its size, ``members`` all row
    indices sorted by (group, row) with group ``g`` at ``members[start[g]:start[g + 1]]``,
    ``group_of_row[i]`` the group of row ``i`` and ``place[i]`` its position in its group.
    """

    def __init__(self, X: np.ndarray) -> None:
        X = X + 0.0  # -0.0 and 0.0 are the same value
        order = _stable_row_order(X)
        is_new = _run_starts(X[order])
        first = order[is_new]  # the sort is stable: a run starts with its first occurrence
        by_first = np.argsort(first, kind="stable")
        renumber = np.empty_like(by_first)
        renumber[by_first] = np.arange(by_first.size)
        self.group_of_row = np.empty(X.shape[0], dtype=np.int64)
        self.group_of_row[order] = renumber[np.cumsum(is_new) - 1]
        self.unique = np.ascontiguousarray(X[first[by_first]])
        self.counts = np.bincount(self.group_of_row, minlength=first.size).astype(np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.counts)))
        self.members = np.argsort(self.group_of_row, kind="stable").astype(np.int64)
        self.place = np.empty(X.shape[0], dtype=np.int64)
        starts = self.start[self.group_of_row[self.members]]
        self.place[self.members] = np.arange(X.shape[0]) - starts

    def rows(self, grp: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Row index of the ``rank``-th member of group ``grp`` (elementwise)."""
        return self.members[self.start[grp] + rank]

    def expand_self(
        self, dist: np.ndarray, grp: np.ndarray, rank: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-group self-query results -> per-row, skipping each row's own index."""
        g = self.group_of_row
        grp, rank = grp[g], rank[g]
        skip = (grp == g[:, None]) & (rank >= self.place[:, None])
        return dist[g], self.rows(grp, rank + skip)


# --------------------------------------------------------------------------- backends
class _FlatFaiss:
    """FAISS brute force in float32 on centred data, certified by a rounding bound."""

    margin = FLAT_MARGIN

    def __init__(self, owner: NeighborIndex) -> None:
        import faiss

        self.owner = owner
        self.index = faiss.IndexFlatL2(owner.dim)
        self.index.add(np.ascontiguousarray(owner.unique - owner.mean, dtype=np.float32))
        self.c = gemm_error_factor(owner.dim, _UNIT32)

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        m = min(self.owner.n_unique, need + self.margin)
        Qc = Q - self.owner.mean
        work = float(Q.shape[0]) * self.owner.n_unique * self.owner.dim
        with _faiss_settings(_threads_for(work)):
            f, cand = self.index.search(np.ascontiguousarray(Qc, dtype=np.float32), m)
        q_norm = np.sqrt(np.einsum("ij,ij->i", Qc, Qc))
        f_last = f[:, -1].astype(np.float64)

        def lower(kth_sq: np.ndarray) -> np.ndarray:
            # A row y left out that could lie within the k-th distance r has
            # |y| <= |q| + r, so its computed distance is off by at most c (2|q| + r)^2.
            return f_last - self.c * (2.0 * q_norm + np.sqrt(kth_sq)) ** 2

        return cand.astype(np.int64), lower


class _KDTree:
    """scipy kd-tree on the distinct rows (float64 distances)."""

    margin = 3  # a few more candidates than needed, so that ties at the k-th are rarely cut

    def __init__(self, owner: NeighborIndex) -> None:
        from scipy.spatial import cKDTree

        self.tree = cKDTree(owner.unique, leafsize=16, balanced_tree=False)
        self.dim = owner.dim
        self.n_unique = owner.n_unique
        # the tree's and our float64 sums of squares differ by a few units of round-off
        self.slack = 1.0 - 4.0 * (owner.dim + 5) * _UNIT64

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        m = min(self.n_unique, need + self.margin)
        work = float(Q.shape[0]) * m * 64 * self.dim  # roughly: a few leaves per query
        d, cand = self.tree.query(Q, k=m, workers=_threads_for(work))
        d = d.reshape(Q.shape[0], m)
        last_sq = d[:, -1] ** 2 * self.slack
        return cand.reshape(Q.shape[0], m).astype(np.int64), lambda kth_sq: last_sq


class _HNSW:
    """FAISS HNSW graph: approximate candidates, exact refinement, no certificate."""

    margin = FLAT_MARGIN

    def __init__(self, owner: NeighborIndex, m: int, ef_search: int) -> None:
        import faiss

        self.owner = owner
        self.ef_search = ef_search
        self.index = faiss.IndexHNSWFlat(owner.dim, m)
        with _faiss_settings(get_num_threads()):
            self.index.add(np.ascontiguousarray(owner.unique - owner.mean, dtype=np.float32))

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        m = min(self.owner.n_unique, need + self.margin)
        self.index.hnsw.efSearch = max(self.ef_search, m)
        Qc = np.ascontiguousarray(Q - self.owner.mean, dtype=np.float32)
        work = float(Q.shape[0]) * self.index.hnsw.efSearch * 16 * self.owner.dim
        with _faiss_settings(_threads_for(work)):
            _, cand = self.index.search(Qc, m)
        return cand.astype(np.int64), None


class _Probe:
    """Times the kd-tree and FAISS on the first search, then keeps the faster one.

    Which one wins depends on the data's intrinsic dimension and ties, not just on its
    width. The sample is a stride of training rows and the number of neighbours is the
    first search's. Both give the same neighbours: the (timing-dependent) choice never
    changes a result.
    """

    def __init__(self, owner: NeighborIndex) -> None:
        self.owner = owner
        self.tree, self.flat = _KDTree(owner), _FlatFaiss(owner)

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        stride = max(1, self.owner.n_unique // PROBE_QUERIES)
        sample = self.owner.unique[::stride][:PROBE_QUERIES]
        t_tree = _seconds(lambda: self.tree.candidates(sample, need))
        t_flat = _seconds(lambda: self.flat.candidates(sample, need))
        self.owner._backend = self.tree if t_tree < t_flat else self.flat
        return self.owner._backend.candidates(Q, need)


def _make_backend(owner: NeighborIndex, kind: str, hnsw_m: int, ef_search: int) -> Any:
    if kind == "hnsw":
        return _HNSW(owner, hnsw_m, ef_search)
    if owner.dim <= KDTREE_MAX_DIM:
        return _KDTree(owner)
    if owner.dim <= PROBE_MAX_DIM and owner.n_unique >= PROBE_MIN_ROWS:
        return _Probe(owner)
    return _FlatFaiss(owner)


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- utilities
def exact_sq_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``sum((a - b) ** 2)`` over the last axis in float64, broadcasting ``A`` against ``B``.

    The one place where distances are computed exactly, so that every path (refinement of
    candidates, the exhaustive search) gives bit-identical values.
    """
    diff = np.subtract(B, A, dtype=np.float64)
    return np.einsum("...j,...j->...", diff, diff)


def gemm_error_factor(dim: int, unit: float) -> float:
    """``c`` in ``|computed - true| <= c (|q| + |y|)^2`` for squared distances by GEMM.

    Rounding the inputs, the two squared norms, the inner product (in any summation order)
    and the final sum contribute at most ``dim + 4`` unit round-offs; padded by 10%.
    """
    return 1.1 * (dim + 5) * unit


def _order_by_distance_then_group(sq: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-row order by (squared distance, group); a single sort when there are no ties."""
    order = np.argsort(sq, axis=1, kind="stable")
    s = np.take_along_axis(sq, order, axis=1)
    if not (s[:, 1:] == s[:, :-1]).any():
        return order
    return np.lexsort((cand, sq), axis=1)


def _fill_slots(cnt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Which sorted candidate fills each of the k slots, and which copy of it.

    Candidate ``j`` of a row fills ``cnt[j]`` consecutive slots. Returns (n, k) candidate
    positions (the number of candidates where they run out) and ranks within the group.
    """
    n, m = cnt.shape
    slots = np.arange(k)
    if cnt.max(initial=0) <= 1 and ((cnt == 0).sum(axis=1) <= 1).all():
        # no copies: each candidate fills one slot, except at most one left-out self entry
        # (count 0), which the slots from its position on step over
        empty = np.where(cnt.min(axis=1) == 0, cnt.argmin(axis=1), m)
        return slots + (slots >= empty[:, None]), np.zeros((n, k), np.int64)
    # general case: repeat each candidate's position by its count (capped at k), plus a
    # sentinel position m with k copies so that every row has at least k entries
    reps = np.concatenate([np.minimum(cnt, k), np.full((n, 1), k)], axis=1)
    flat = np.repeat(np.tile(np.arange(m + 1), n), reps.ravel())
    row_start = np.concatenate(([0], np.cumsum(reps.sum(axis=1))[:-1]))
    pos = flat[row_start[:, None] + slots]
    before = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(cnt, axis=1)], axis=1)
    return pos, slots - np.take_along_axis(before, pos, axis=1)


def _stable_row_order(X: np.ndarray) -> np.ndarray:
    """A stable order of the rows of ``X`` in which identical rows are adjacent."""
    if X.shape[1] <= 16:
        return np.lexsort(X.T[::-1])
    rows = np.ascontiguousarray(X).view(np.dtype((np.void, X.shape[1] * X.itemsize)))
    return np.argsort(rows.ravel(), kind="stable")


def _run_starts(sorted_rows: np.ndarray) -> np.ndarray:
    is_new = np.ones(sorted_rows.shape[0], dtype=bool)
    is_new[1:] = (sorted_rows[1:] != sorted_rows[:-1]).any(axis=1)
    return is_new


def _distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a query chunk, and for each row the index of its distinct row."""
    if X.shape[0] == 1:
        return X, np.zeros(1, dtype=np.int64)
    order = _stable_row_order(X)
    Xs = X[order]
    is_new = _run_starts(Xs)
    inverse = np.empty(X.shape[0], dtype=np.int64)
    inverse[order] = np.cumsum(is_new) - 1
    return Xs[is_new], inverse


def _ragged_to_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> np.ndarray:
    """(row, col) pairs sorted by row -> an (n_rows, most per row) matrix padded with -1."""
    per_row = np.bincount(rows, minlength=n_rows)
    out = np.full((n_rows, max(1, int(per_row.max()))), -1, dtype=np.int64)
    start = np.concatenate(([0], np.cumsum(per_row)[:-1]))
    out[rows, np.arange(rows.size) - start[rows]] = cols
    return out
