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
2. **Candidates** for the ``k`` nearest come from a float32 brute force (one GEMM per
   query chunk, then a selection of the smallest values of each row, see
   :class:`_FlatGemm`) or from a scipy kd-tree, which is faster on low-dimensional data
   (always used up to :data:`KDTREE_MAX_DIM` features; between that and
   :data:`PROBE_MAX_DIM` features both are timed on a sample of the training rows
   before the first search and the faster one is kept; the choice changes speed, never
   results). Exact searches over at most :data:`EXHAUSTIVE_MAX_ROWS` distinct rows go
   straight to step 4's exhaustive search.
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

Compiled kernels. The selection of step 2 and the refinement of step 3 run in C
(``_knn_native.c``, built by ``setup.py`` when a C compiler is present): one pass over
each row of the GEMM result instead of several numpy passes, and no gathered copies of
the candidate rows. With them, small-integer data (binary features, counts) are searched
in exact float32 arithmetic and need no certificate (see :class:`_FlatGemm`). Without a
compiler the extension is skipped at install and numpy does the same work (``_native``
is then None): the same neighbours, distances equal to a few units of round-off (the
two paths sum squares in different orders), only slower.

Memory is bounded for any size: queries run in chunks whose temporary arrays stay under
``memory_budget`` bytes (256 MiB by default, shared by the threads); no
``n_query x n_train`` matrix is ever built. Chunks aim at :data:`CHUNK_BYTES` of
temporaries: large enough that per-call costs (numpy's, BLAS packing) do not dominate.

Threads: the chunks of a search run on a pool of :func:`set_num_threads` threads kept
for the process (default: every core), each single-threaded inside (BLAS limited to one
thread with threadpoolctl); numpy and the compiled kernels release the GIL in the heavy
steps. kd-tree and HNSW searches run their chunks one after the other, the tree or FAISS
using the threads itself. Measured on ADB-dev (2 cores, ``tabular_vs_pyod.py``), LOF's
fit+score is about 2.2x faster than PyOD's in median and KNN's about 3x; see
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from ..errors import InputError, ParamError

try:  # compiled kernels (setup.py); optional: without a C compiler numpy does the same work
    from . import _knn_native as _native
except ImportError:  # pragma: no cover - depends on the install
    _native = None

DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: up to this many features the exact search always uses a kd-tree.
KDTREE_MAX_DIM = 8
#: up to this many features (and from PROBE_MIN_ROWS distinct rows) kd-tree and GEMM
#: are both timed on PROBE_QUERIES training rows at the first search; above it GEMM is used
#: (on ADB-dev the GEMM wins from about 10 features on, with exceptions both ways).
PROBE_MAX_DIM = 12
PROBE_MIN_ROWS = 2048
PROBE_QUERIES = 128
#: extra float32 candidates per query beyond the k (+1) needed, to absorb rounding and ties.
FLAT_MARGIN = 5
#: more candidates for a second try on rows the first could not certify (ties at the k-th
#: distance); on ADB-dev (LOF, seed 0) it settles every row that fails the first try.
RETRY_MARGIN = 24
#: below this many multiply-adds (queries x training rows x features) search is single-threaded.
SMALL_WORK = 1e7
#: centred training rows up to this norm are searched in float32 (squares cannot overflow).
F32_SAFE_NORM = 1e17
#: target size of one query chunk's temporaries, and the fewest rows a chunk has (budget permitting).
CHUNK_BYTES = 32 * 2**20
MIN_CHUNK_ROWS = 64
#: searches of at least this many query rows are spread over every thread.
POOL_MIN_ROWS = 1024
#: exact searches over at most this many distinct training rows go straight to the exhaustive search.
EXHAUSTIVE_MAX_ROWS = 200

_EMPTY_INT = np.empty(0, dtype=np.int64)

IndexKind = Literal["flat", "hnsw"]
#: ``candidates(Q, need)`` of a backend: (candidate groups, at least ``need`` per row unless
#: there are fewer groups; a function giving, from the squared k-th distance, a lower bound
#: on the squared distance of every group left out, or None when there is no such bound).
Candidates = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]

_UNIT32 = 2.0**-24  # unit round-off of float32
_UNIT64 = 2.0**-53
_num_threads: int | None = None
_CPU_COUNT = os.cpu_count() or 1


# --------------------------------------------------------------------------- threads
def set_num_threads(n: int | None) -> None:
    """Threads for neighbour search (chunk pool, FAISS OpenMP, kd-tree workers); None = all cores."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ParamError(f"the number of threads must be a positive integer or None, got {n!r}.")
    _num_threads = n


def get_num_threads() -> int:
    """Threads a large neighbour search uses."""
    return _num_threads or _CPU_COUNT


def _threads_for(work: float, owner: NeighborIndex | None = None) -> int:
    """Threads for one backend call: 1 for small work or inside a pooled chunk."""
    if work < SMALL_WORK or (owner is not None and owner._pooled):
        return 1
    return get_num_threads()


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool of ``threads`` workers, kept for the process (starting threads costs
    milliseconds per search otherwise)."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="oddkit-knn")
    return _pools[threads]


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None
_blas_controller: Any = None
_blas_modules = -1


def _blas_libraries() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, rebuilt after new imports.

    Building the view scans the process's shared libraries (milliseconds), so it is kept;
    an import since the last scan (torch, a scipy submodule) may have loaded another
    BLAS, so a change in ``len(sys.modules)`` triggers a new scan.
    """
    global _blas_controller, _blas_modules
    from threadpoolctl import ThreadpoolController

    if _blas_controller is None or len(sys.modules) != _blas_modules:
        _blas_modules = len(sys.modules)
        _blas_controller = ThreadpoolController()
    return _blas_controller


def _as_blas_owner(change: Callable[[], Any]) -> Any:
    """Run ``change`` (a threadpoolctl limit or restore) from whichever thread we are on.

    threadpoolctl 3.8 lets only one thread at a time set a process-wide OpenBLAS pool and
    silently ignores the others. Our counted limit may be taken on one thread and lifted
    on another, so the ownership is released before and after each change (under
    ``_blas_lock``); older threadpoolctl versions have no such rule and need nothing.
    """
    import threadpoolctl

    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    try:
        return change()
    finally:
        if release is not None:
            release(force=True)


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Every loaded BLAS on one thread inside the block (threadpoolctl).

    Counted: the limit is taken when the first thread enters and lifted when the last one
    leaves, so threads working side by side (a pooled search, detectors scoring in
    parallel) never restore the setting under one another.
    """
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = _as_blas_owner(lambda: _blas_libraries().limit(limits=1, user_api="blas"))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _as_blas_owner(_blas_limit.restore_original_limits)
                _blas_limit = None


@contextmanager
def _faiss_settings(n_threads: int) -> Iterator[None]:
    """FAISS (HNSW) with ``n_threads`` OpenMP threads and its BLAS path from 20 queries on.

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
        self._pooled = False  # True while chunks run on a thread pool

    # ------------------------------------------------------------------ public
    def query(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training rows of each row of ``X``."""
        self._check_k(k, self.n_train, "training rows")
        X = np.asarray(X, dtype=np.float64) + 0.0  # a copy, with -0.0 turned into 0.0
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"queries must have shape (n, {self.dim}), got {X.shape}.")
        dist = np.empty((X.shape[0], k))
        idx = np.empty((X.shape[0], k), dtype=np.int64)

        self._settle_backend(k)

        def chunk(lo: int, hi: int) -> None:
            distinct, inverse = _distinct_rows(X[lo:hi])
            d, grp, rank = self._search(distinct, k, None)
            dist[lo:hi] = d[inverse]
            idx[lo:hi] = self.groups.rows(grp[inverse], rank[inverse])

        self._run_chunks(chunk, X.shape[0], self._rows_per_chunk(k))
        return dist, idx

    def kth_distance(self, X: np.ndarray, k: int) -> np.ndarray:
        """Distance from each row of ``X`` to its ``k``-th nearest training row.

        The same exact search as :meth:`query` (the same numbers, bit for bit), without
        what only indices need: query rows are not deduplicated and no row indices are
        looked up. For scores that use this one distance (``knn_ood``).
        """
        self._check_k(k, self.n_train, "training rows")
        X = np.asarray(X, dtype=np.float64) + 0.0
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"queries must have shape (n, {self.dim}), got {X.shape}.")
        out = np.empty(X.shape[0])
        self._settle_backend(k)

        def chunk(lo: int, hi: int) -> None:
            out[lo:hi] = self._search(X[lo:hi], k, None)[0][:, -1]

        self._run_chunks(chunk, X.shape[0], self._rows_per_chunk(k))
        return out

    def query_self(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest *other* training rows of every training row, (n_train, k)."""
        self._check_k(k, self.n_train - 1, "other training rows (each row leaves itself out)")
        dist = np.empty((self.n_unique, k))
        grp = np.empty((self.n_unique, k), dtype=np.int64)
        rank = np.empty((self.n_unique, k), dtype=np.int64)
        self._settle_backend(k + 1)

        def chunk(lo: int, hi: int) -> None:
            own = np.arange(lo, hi)
            dist[lo:hi], grp[lo:hi], rank[lo:hi] = self._search(self.unique[lo:hi], k, own)

        self._run_chunks(chunk, self.n_unique, self._rows_per_chunk(k + 1))
        return self.groups.expand_self(dist, grp, rank)

    def _settle_backend(self, need: int) -> None:
        """Let a :class:`_Probe` pick its backend (timed on a sample) before a search starts."""
        if isinstance(self._backend, _Probe) and self.n_unique > EXHAUSTIVE_MAX_ROWS:
            self._backend = self._backend.choose(need)

    def _run_chunks(self, fn: Callable[[int, int], None], n: int, step: int) -> None:
        """``fn(lo, hi)`` over consecutive chunks of ``n`` rows, on a thread pool if it pays.

        From POOL_MIN_ROWS rows on, chunks are cut so that each thread gets at least two
        (below it, pooling small chunks costs more than it saves). The chunks run on
        :func:`get_num_threads` threads of a pool kept for the process, each
        single-threaded inside (BLAS and backends), since numpy and the compiled kernels
        release the GIL in the heavy steps. Chunks write disjoint rows of preallocated
        results, so the order does not matter.
        """
        threads = get_num_threads()
        if n >= POOL_MIN_ROWS:  # two chunks per thread
            step = min(step, -(-n // (2 * threads)))
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        try:
            if threads <= 1 or len(bounds) <= 1 or not getattr(self._backend, "poolable", False):
                for lo, hi in bounds:
                    fn(lo, hi)
                return
            self._pooled = True
            with _one_blas_thread():
                list(_pool(threads).map(lambda b: fn(*b), bounds))
        finally:
            self._pooled = False
            release = getattr(self._backend, "release", None)
            if release is not None:
                release()

    # ------------------------------------------------------------------ search
    def _search(
        self, Q: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest of distinct rows ``Q`` as (distance, group, rank within group).

        ``own`` gives, for a self query, each row's own group (one copy is left out).
        Small exact indexes skip the candidates: the exhaustive float64 search costs
        them little more than the float32 one, and needs no second pass on ties.
        Rows whose candidates cannot be certified (ties or near-ties at the k-th
        distance) get a second try with :data:`RETRY_MARGIN` more candidates, then, if
        still uncertified, the exhaustive search.
        """
        if self.n_unique <= EXHAUSTIVE_MAX_ROWS and not isinstance(self._backend, _HNSW):
            return self._search_all(Q, k, own)
        need = k + (own is not None)
        dist, grp, rank, failed = self._certified(Q, k, own, need)
        bad = np.flatnonzero(failed)
        if bad.size and not isinstance(self._backend, _HNSW):
            own_bad = None if own is None else own[bad]
            res = self._certified(Q[bad], k, own_bad, need + RETRY_MARGIN)
            dist[bad], grp[bad], rank[bad] = res[:3]
            bad = bad[res[3]]
        if bad.size:
            own_bad = None if own is None else own[bad]
            dist[bad], grp[bad], rank[bad] = self._search_all(Q[bad], k, own_bad)
        return dist, grp, rank

    def _certified(
        self, Q: np.ndarray, k: int, own: np.ndarray | None, need: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidates for ``need`` neighbours, refined; and which rows are not proven exact."""
        cand, lower = self._backend.candidates(Q, need)
        dist, grp, rank, kth_sq = self._refine(Q, cand, k, own)
        failed = ~np.isfinite(kth_sq)  # fewer than k candidates (HNSW can return fewer)
        if cand.shape[1] < self.n_unique and lower is not None:
            failed |= ~(kth_sq < lower(kth_sq))
        return dist, grp, rank, failed

    def _refine(
        self, Q: np.ndarray, cand: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact float64 distances of candidate groups (-1 = none), sorted, expanded to k slots.

        Returns distances, groups and ranks within the group for the k slots, and the
        squared k-th distance (inf where the candidates hold fewer than k rows).
        """
        if _native is not None:
            return self._native_refine(Q, cand, k, own)
        valid = cand >= 0
        sq = candidate_sq_dist(Q, self.unique, cand)
        cand = np.where(valid, cand, 0)
        cnt = np.where(valid, self.groups.counts[cand], 0)
        if own is not None:
            cnt -= valid & (cand == own[:, None])
        order = _order_by_distance_then_group(sq, cand)
        sq = _take(sq, order)
        cand = _take(cand, order)
        cnt = _take(cnt, order)
        pos, rank = _fill_slots(cnt, k)
        short = pos[:, -1] >= cand.shape[1]
        pos = np.minimum(pos, cand.shape[1] - 1)
        d_sq = _take(sq, pos)
        kth_sq = np.where(short, np.inf, d_sq[:, -1])
        return np.sqrt(d_sq), _take(cand, pos), rank, kth_sq

    def _native_refine(
        self, Q: np.ndarray, cand: np.ndarray | None, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_refine` by the compiled kernel; ``cand=None`` means every group."""
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        n = Q.shape[0]
        sq = np.empty((n, k))
        grp = np.empty((n, k), dtype=np.int64)
        rank = np.empty((n, k), dtype=np.int64)
        kth_sq = np.empty(n)
        every = cand is None
        cand = _EMPTY_INT if every else np.ascontiguousarray(cand, dtype=np.int64)
        own_arr = _EMPTY_INT if own is None else np.ascontiguousarray(own, dtype=np.int64)
        m = 0 if every else cand.shape[1]
        _native.refine(
            Q, self.unique, cand, self.groups.counts, own_arr, own is not None,
            n, m, self.dim, self.n_unique, k, every, sq, grp, rank, kth_sq,
        )
        return np.sqrt(sq), grp, rank, kth_sq

    def _search_all(
        self, Q: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact, tie-complete search over every training row.

        float64 distances by the GEMM expansion, with their rounding bound, select a
        superset of the groups at or within the k-th distance; the superset is refined.
        Where the GEMM values are exact (integer data), the selection is exact already
        and keeps only the ``k (+1)`` first groups by (distance, group).
        """
        if _native is not None and self.n_unique <= EXHAUSTIVE_MAX_ROWS:
            return self._native_refine(Q, None, k, own)[:3]  # direct, exact sums
        take = min(self.n_unique, k + (own is not None))
        dist = np.empty((Q.shape[0], k))
        grp = np.empty((Q.shape[0], k), dtype=np.int64)
        rank = np.empty((Q.shape[0], k), dtype=np.int64)
        step = max(1, self.memory_budget // (32 * self.n_unique * get_num_threads()))
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
        """Query rows per chunk: temporaries near CHUNK_BYTES (cache-friendly), at least
        MIN_CHUNK_ROWS rows, and never over the memory budget (shared by the threads)."""
        m = min(self.n_unique, k + 1 + FLAT_MARGIN)
        gathered = 0 if _native is not None else 24 * self.dim  # numpy refinement's copies
        per_row = m * (gathered + 8 * k + 96) + 16 * self.dim + self._backend.bytes_per_row(m)
        rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // per_row)
        budget = self.memory_budget // get_num_threads()  # chunks may run side by side
        return max(1, min(rows, budget // per_row))

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
class _FlatGemm:
    """Brute force: one GEMM per query chunk and a two-stage top-m selection.

    The training rows, centred at their mean, are kept in float32 (float64 if float32
    could overflow) as ``-2 y`` with their squared norms, so that one GEMM and one
    addition give ``t(y) = |y|^2 - 2 q.y`` for every training row ``y``: the squared
    distance less ``|q|^2``, which does not change the order within a query row.

    Picking the m smallest of n values with ``np.argpartition`` over the whole row
    costs more than the GEMM, so it is done in two stages (in C when the compiled
    kernels are built, in numpy otherwise). The n columns are cut into
    ``nb`` strided blocks of ``b`` (block j holds columns j, j + nb, j + 2 nb, ...), and
    the minimum of every block is one vectorised pass. The m blocks with the smallest
    minima hold the m smallest values: each of them has a value at or below the m-th
    smallest minimum, and no other block has one below it. The final partition then
    runs over those ``m b`` values only; ``b ~ sqrt(n / m)`` balances the two stages.

    Certificate: every value left out is at least the m-th selected one, ``f``; with
    the float32 rounding bound ``c (|q| + |y|)^2`` on ``t(y)``, no row left out is within
    the k-th distance ``r`` when ``|q|^2 + f - c (2 |q| + r)^2 > r^2``. Query rows so
    large that ``t`` could overflow get no certificate (the exhaustive search answers).

    With the compiled selection (``_knn_native.smallest``), the m smallest are taken by
    (value, column), and small-integer data (every ``|x| <= sqrt(2**24 / (4 d))``: binary
    features, counts, grey levels) are not centred, so that every ``t(y)`` is exact in
    float32. For such query rows the selection is already the exact answer, ties at the
    k-th distance included (they go to the lower group, as in the exhaustive search),
    and needs no certificate: tie-heavy binary data no longer fall back to the
    exhaustive search row after row.
    """

    margin = FLAT_MARGIN
    poolable = True

    def __init__(self, owner: NeighborIndex) -> None:
        self.owner = owner
        U = owner.unique
        # small integers (binary, counts, pixel levels): float32 products and sums are exact
        # when every |x| <= exact_limit, so the rows are not centred and ties stay ties
        self.exact_limit = np.sqrt(2.0**24 / (4.0 * owner.dim))
        self.exact = bool(
            _native is not None
            and np.abs(U).max() <= self.exact_limit
            and (U == np.round(U)).all()
        )
        self.shift = np.zeros(owner.dim) if self.exact else owner.mean
        centred = U - self.shift
        self.norms_sq = np.einsum("ij,ij->i", centred, centred)
        small = np.sqrt(self.norms_sq.max()) < F32_SAFE_NORM
        self.dtype = np.float32 if small else np.float64
        self.c = gemm_error_factor(owner.dim, _UNIT32 if small else _UNIT64)
        self.rows = centred.astype(self.dtype)
        # |t(y)| and every partial sum of it stay below (|q| + |y|)^2: no overflow below this
        self.safe_q_norm = np.sqrt(np.finfo(self.dtype).max) / 4 - np.sqrt(self.norms_sq.max())
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        self._buffers: dict[int, np.ndarray] = {}  # thread id -> GEMM output (see _gemm_buffer)

    def bytes_per_row(self, m: int) -> int:
        """Temporary bytes per query row of :meth:`candidates` (for chunk sizes)."""
        n, b = self.owner.n_unique, self._block_size(m)
        if _native is not None:  # the GEMM output row and the candidates
            return self.rows.itemsize * n + 16 * m
        return 4 * (n + b) + 8 * n // max(1, b) + 24 * m * b

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        n = self.owner.n_unique
        m = min(n, need + self.margin)
        if m == n:  # every training row is a candidate: nothing to certify
            return np.broadcast_to(np.arange(n), (Q.shape[0], n)), None
        Qc = Q - self.shift
        q_sq = np.einsum("ij,ij->i", Qc, Qc)
        b = self._block_size(m)
        weights, norms, nb = self._layout(b)
        if _native is not None:  # b == 1: no padding
            cand, f_last = self._native_candidates(Qc, weights, norms, m)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow: no certificate
                t = np.matmul(Qc.astype(self.dtype), weights.T)
                t += norms
            if b > 1:
                block_min = t.reshape(Q.shape[0], b, nb).min(axis=1)
                blocks, _ = _smallest(block_min, m)
                cols = (blocks[:, :, None] + nb * np.arange(b)).reshape(Q.shape[0], m * b)
                t = _take(t, cols)
            best, f_last = _smallest(t, m)
            f_last = f_last.astype(np.float64)
            cand = _take(cols, best) if b > 1 else best.astype(np.int64)
            cand[cand >= n] = -1  # padding columns (chosen only when values overflow)
        base = q_sq + f_last
        q_norm = np.sqrt(q_sq)

        safe = q_norm < self.safe_q_norm
        exact = np.zeros(Q.shape[0], dtype=bool)
        if self.exact:  # exact values, ties to the lower group: the selection is the answer
            exact = (np.abs(Q).max(axis=1) <= self.exact_limit) & (Q == np.round(Q)).all(axis=1)

        def lower(kth_sq: np.ndarray) -> np.ndarray:
            bound = base - self.c * (2.0 * q_norm + np.sqrt(kth_sq)) ** 2
            bound = np.where(safe, bound, -np.inf)  # possible overflow: no proof
            return np.where(exact, np.inf, bound)

        return cand, lower

    def _native_candidates(
        self, Qc: np.ndarray, weights: np.ndarray, norms: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates by one GEMM and the compiled selection.

        (GEMM blocks small enough to stay in cache for the selection were measured
        slower: BLAS repacks the training rows at every call.)
        """
        n_q, n = Qc.shape[0], weights.shape[0]
        cand = np.empty((n_q, m), dtype=np.int64)
        f_last = np.empty(n_q, dtype=self.dtype)
        t = self._gemm_buffer(n_q, n)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: no certificate
            np.matmul(Qc.astype(self.dtype), weights.T, out=t)
        _native.smallest(t, norms, n_q, n, m, cand, f_last, self.dtype == np.float64)
        return cand, f_last.astype(np.float64)

    def _gemm_buffer(self, rows: int, cols: int) -> np.ndarray:
        """This thread's GEMM output array, reused from chunk to chunk of a search.

        A fresh array per chunk costs its page faults again every time (about a third of
        a 64-d search over 50,000 rows); :meth:`release` drops the arrays after a search.
        """
        key = threading.get_ident()
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = np.empty((rows, cols), dtype=self.dtype)
            self._buffers[key] = buf
        return buf[:rows]

    def release(self) -> None:
        """Drop the per-thread GEMM buffers (called when a search ends)."""
        self._buffers.clear()

    def _block_size(self, m: int) -> int:
        """Block size b ~ 0.7 sqrt(n / m); 1 (a single partition) when blocks would not help.

        The factor 0.7 (fewer gathered values, a longer first partition) measured a few
        per cent faster than 1 on ADB-dev sets.
        """
        if _native is not None:  # the compiled selection reads each row once
            return 1
        n = self.owner.n_unique
        b = max(1, int(0.7 * np.sqrt(n / m) + 0.5))
        return b if -(-n // b) > m else 1

    def _layout(self, b: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``-2 y`` and ``|y|^2`` padded to ``b * nb`` columns (padding: y = 0, |y|^2 = inf)."""
        if b not in self._layouts:
            n, d = self.rows.shape
            nb = -(-n // b)
            weights = np.zeros((nb * b, d), dtype=self.dtype)
            weights[:n] = -2.0 * self.rows
            norms = np.full(nb * b, np.inf, dtype=self.dtype)
            norms[:n] = self.norms_sq
            self._layouts[b] = (weights, norms, nb)
        return self._layouts[b]


class _KDTree:
    """scipy kd-tree on the distinct rows (float64 distances)."""

    margin = 3  # a few more candidates than needed, so that ties at the k-th are rarely cut
    #: chunks run one after the other, each query spread over the tree's own threads
    #: (measured faster than chunks on our pool: part of a pooled query holds the GIL)
    poolable = False

    def __init__(self, owner: NeighborIndex) -> None:
        from scipy.spatial import cKDTree

        self.owner = owner
        self.tree = cKDTree(owner.unique, leafsize=32, balanced_tree=False)  # 32 timed a little faster than 16 here
        self.dim = owner.dim
        self.n_unique = owner.n_unique
        # the tree's and our float64 sums of squares differ by a few units of round-off
        self.slack = 1.0 - 4.0 * (owner.dim + 5) * _UNIT64

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        m = min(self.n_unique, need + self.margin)
        work = float(Q.shape[0]) * m * 64 * self.dim  # roughly: a few leaves per query
        d, cand = self.tree.query(Q, k=m, workers=_threads_for(work, self.owner))
        d = d.reshape(Q.shape[0], m)
        last_sq = d[:, -1] ** 2 * self.slack
        return cand.reshape(Q.shape[0], m).astype(np.int64), lambda kth_sq: last_sq

    def bytes_per_row(self, m: int) -> int:
        return 16 * m


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

    def bytes_per_row(self, m: int) -> int:
        return 16 * m


class _Probe:
    """Times the kd-tree and the GEMM search on the first search, then keeps the faster one.

    Which one wins depends on the data's intrinsic dimension and ties, not just on its
    width. The sample is a stride of training rows and the number of neighbours is the
    first search's. Both give the same neighbours: the (timing-dependent) choice never
    changes a result.
    """

    def __init__(self, owner: NeighborIndex) -> None:
        self.owner = owner
        self.tree, self.flat = _KDTree(owner), _FlatGemm(owner)

    def choose(self, need: int) -> _KDTree | _FlatGemm:
        """The faster backend for searches of ``need`` candidates."""
        stride = max(1, self.owner.n_unique // PROBE_QUERIES)
        sample = self.owner.unique[::stride][:PROBE_QUERIES]
        self.tree.candidates(sample[:2], need)  # warm-up: the first call builds buffers
        self.flat.candidates(sample[:2], need)
        t_tree = _seconds(lambda: self.tree.candidates(sample, need))
        t_flat = _seconds(lambda: self.flat.candidates(sample, need))
        return self.tree if t_tree < t_flat else self.flat

    def candidates(self, Q: np.ndarray, need: int) -> Candidates:
        self.owner._backend = self.choose(need)
        return self.owner._backend.candidates(Q, need)

    def bytes_per_row(self, m: int) -> int:
        return max(self.tree.bytes_per_row(m), self.flat.bytes_per_row(m))


def _make_backend(owner: NeighborIndex, kind: str, hnsw_m: int, ef_search: int) -> Any:
    if kind == "hnsw":
        return _HNSW(owner, hnsw_m, ef_search)
    if owner.dim <= KDTREE_MAX_DIM:
        return _KDTree(owner)
    if owner.dim <= PROBE_MAX_DIM and owner.n_unique >= PROBE_MIN_ROWS:
        return _Probe(owner)
    return _FlatGemm(owner)


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- utilities
def candidate_sq_dist(Q: np.ndarray, R: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``sum((R[cand[i, j]] - Q[i]) ** 2)`` in float64 (inf where ``cand < 0``).

    The numpy path's one place for exact distances, so that its refinement and its
    exhaustive search give bit-identical values. (The compiled ``refine`` sums in order
    of the features; ``einsum`` may sum in another order, so the two builds agree to a
    few units of round-off, not bit for bit.)
    """
    valid = cand >= 0
    diff = R[np.where(valid, cand, 0)]
    diff -= Q[:, None, :]
    sq = np.einsum("ijk,ijk->ij", diff, diff)
    sq[~valid] = np.inf
    return sq


def gemm_error_factor(dim: int, unit: float) -> float:
    """``c`` in ``|computed - true| <= c (|q| + |y|)^2`` for squared distances by GEMM.

    Rounding the inputs, the two squared norms, the inner product (in any summation order)
    and the final sum contribute at most ``dim + 4`` unit round-offs; padded by 10%.
    """
    return 1.1 * (dim + 5) * unit


def _take(values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``values[i, cols[i, j]]`` for 2-D arrays (``np.take_along_axis`` on axis 1, with
    less per-call overhead)."""
    return values[np.arange(values.shape[0])[:, None], cols]


def _smallest(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the ``m`` smallest values of each row (unordered), and the m-th value.

    (Reading the columns off a mask at the m-th value from ``np.partition`` was tried:
    it is slower once the mask step and ties are paid for.)
    """
    best = np.argpartition(values, m - 1, axis=1)[:, :m]
    return best, _take(values, best).max(axis=1)


def _order_by_distance_then_group(sq: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-row order by (squared distance, group); a single sort when there are no ties.

    With ties, each value's rank among the distinct distances of its row and its group
    form one integer key, sorted once (cheaper than a two-key lexsort).
    """
    order = np.argsort(sq, axis=1, kind="stable")
    s = _take(sq, order)
    new_value = s[:, 1:] != s[:, :-1]
    if new_value.all():
        return order
    rank = np.zeros(sq.shape, dtype=np.int64)
    np.cumsum(new_value, axis=1, out=rank[:, 1:])
    g = _take(cand, order)
    key = rank * (int(g.max()) + 1) + g
    return _take(order, np.argsort(key, axis=1, kind="stable"))


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
    return pos, slots - _take(before, pos)


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
