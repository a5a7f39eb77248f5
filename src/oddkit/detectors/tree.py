"""Tree-based detectors: Isolation Forest.

The trees are grown with scikit-learn (so that a given ``random_state`` gives the very
same forest as scikit-learn's and PyOD's ``IsolationForest``), then flattened into plain
node arrays. Scoring is our own vectorised traversal of all trees at once, one depth
level per step, so a saved forest is data (JSON + ``.npz``) and never a pickle.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ParamError, PersistenceError
from .base import Detector, check_bool, check_float, check_int, check_random_state, register

__all__ = ["IForest", "average_path_length"]

#: (rows x trees) pairs walked per block: bounds the working memory of scoring
#: (about 30 bytes a pair) whatever the number of rows; small enough to stay in cache.
_CELLS_PER_BLOCK = 1 << 15
#: Largest padded forest (nodes) for the level-by-level walk; beyond it (very large
#: ``max_samples``) the linked walk is used. 2**21 nodes take about 25 MB.
_MAX_PADDED_NODES = 1 << 21


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """c(n): mean path length of an unsuccessful search in a binary search tree of n keys.

    Liu et al. (2008), eq. 1: ``c(n) = 2 H(n - 1) - 2 (n - 1) / n`` with the harmonic
    number ``H(i) ~ ln(i) + Euler's constant``; ``c(1) = 0`` and ``c(2) = 1``. It both
    normalises the mean depth and extends the depth of a leaf that still holds ``n``
    training rows (the tree stopped growing at its height limit).
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    m = n[big]
    out[big] = 2.0 * (np.log(m - 1.0) + np.euler_gamma) - 2.0 * (m - 1.0) / m
    return out


@register
class IForest(Detector):
    """Isolation Forest: a row that random axis-parallel splits isolate quickly is anomalous.

    Each of ``n_estimators`` trees is grown on a random sub-sample of ``max_samples``
    training rows (psi) by splitting on a random feature at a random threshold between
    that feature's minimum and maximum, up to height ``ceil(log2(psi))``. The path
    length ``h(x)`` of a row in a tree is the depth of the leaf it falls into plus
    ``c(n_leaf)`` for the ``n_leaf`` training rows left there (see
    :func:`average_path_length`). The score is ``2 ** (-E[h(x)] / c(psi))``, in (0, 1],
    higher = more anomalous (about 0.5 or below for normal rows).

    Reference: F. T. Liu, K. M. Ting and Z.-H. Zhou, "Isolation Forest", ICDM 2008.

    Defaults are those of the paper, scikit-learn and PyOD: ``n_estimators=100``,
    ``max_samples="auto"`` (= ``min(256, n)``; an int is a row count, clipped to ``n``;
    a float in (0, 1] a share of ``n``, at least 1), ``max_features=1.0`` (features drawn, without
    replacement, for each tree: an int count or a float share), ``bootstrap=False``
    (sub-samples drawn without replacement).

    Implementation: scikit-learn's ``IsolationForest`` grows the trees (same
    ``random_state`` -> same trees), which are then stored as concatenated node arrays
    (``children_left_``, ``children_right_``, ``split_feature_`` in original column numbers,
    ``split_threshold_``, ``node_depth_``, ``n_node_samples_``, ``tree_offsets_``). Scoring
    walks every (row, tree) pair down one level per step with numpy, never looping over
    rows (trees padded to complete binary trees, stored level by level, so a child's slot
    is computed rather than looked up; linked nodes when padding would be too large).
    Rows are rounded to float32 before the threshold tests, as scikit-learn's
    trees do, so scores equal scikit-learn's ``-score_samples`` (to rounding of the
    sum over trees) and PyOD's ``decision_function`` up to PyOD's constant offset
    (``offset_``, the 10% quantile of the training scores), which leaves every ranking
    metric unchanged.

    Constant columns: a column with no spread in a sub-sample is never split on (the
    splitter skips it), so it cannot produce a non-finite score. One training row is
    enough: the forest is then a single leaf and every score is 0.5, as in
    scikit-learn.
    """

    name = "iforest"
    family = "tree"
    reference = "Liu, Ting & Zhou, Isolation Forest, ICDM 2008"
    randomized = True

    def __init__(
        self,
        n_estimators: int = 100,
        max_samples: str | int | float = "auto",
        max_features: int | float = 1.0,
        bootstrap: bool = False,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.random_state = random_state
        self._check_params()

    # ------------------------------------------------------------------ params
    def _check_params(self) -> None:
        check_int("n_estimators", self.n_estimators, low=1)
        ms = self.max_samples
        if isinstance(ms, str):
            if ms != "auto":
                raise ParamError(
                    f'max_samples must be "auto", an int >= 1 or a float in (0, 1]; got {ms!r}.'
                )
        elif isinstance(ms, numbers.Integral) and not isinstance(ms, bool):
            check_int("max_samples", ms, low=1)
        else:
            check_float("max_samples", ms, 0.0, 1.0, low_inclusive=False)
        mf = self.max_features
        if isinstance(mf, numbers.Integral) and not isinstance(mf, bool):
            check_int("max_features", mf, low=1)
        else:
            check_float("max_features", mf, 0.0, 1.0, low_inclusive=False)
        check_bool("bootstrap", self.bootstrap)
        check_random_state(self.random_state)

    def _resolve_max_samples(self, n: int) -> int:
        ms = self.max_samples
        if isinstance(ms, str):
            return min(256, n)
        if isinstance(ms, numbers.Integral):
            return min(int(ms), n)
        return max(1, int(float(ms) * n))

    def _resolve_max_features(self, d: int) -> int:
        mf = self.max_features
        if isinstance(mf, numbers.Integral):
            if mf > d:
                raise ParamError(
                    f"max_features={mf} exceeds the {d} features of the training data."
                )
            return int(mf)
        return max(1, int(float(mf) * d))

    # ------------------------------------------------------------------ fit
    def _fit(self, X: np.ndarray, y: np.ndarray | None, **context: Any) -> None:
        from sklearn.ensemble import IsolationForest

        n, d = X.shape
        psi = self._resolve_max_samples(n)
        n_feat = self._resolve_max_features(d)
        forest = IsolationForest(
            n_estimators=int(self.n_estimators),
            max_samples=psi,
            contamination="auto",  # no threshold: skips scoring the training rows
            max_features=n_feat,  # resolved count: same draws as a share
            bootstrap=bool(self.bootstrap),
            n_jobs=1,
            random_state=self.random_state,
        ).fit(X)
        self._store_forest(forest, d)
        self.max_samples_ = int(psi)
        self.max_features_ = int(n_feat)
        self._build_table()

    def _store_forest(self, forest: Any, d: int) -> None:
        """Flatten the fitted trees into concatenated node arrays (global node ids)."""
        lefts, rights, feats, thrs, depths, counts = [], [], [], [], [], []
        offsets = [0]
        for est, cols in zip(forest.estimators_, forest.estimators_features_):
            t = est.tree_
            off = offsets[-1]
            leaf = t.children_left < 0
            # trees see X[:, cols] only when a feature subset was drawn
            col_map = np.asarray(cols) if len(cols) != d else np.arange(d)
            lefts.append(np.where(leaf, -1, t.children_left + off))
            rights.append(np.where(leaf, -1, t.children_right + off))
            feats.append(np.where(leaf, -1, col_map[np.where(leaf, 0, t.feature)]))
            thrs.append(np.where(leaf, 0.0, t.threshold))
            depths.append(t.compute_node_depths() - 1)  # root at depth 0
            counts.append(t.n_node_samples)
            offsets.append(off + t.node_count)
        self.tree_offsets_ = np.asarray(offsets, dtype=np.int64)
        self.children_left_ = np.concatenate(lefts).astype(np.int64)
        self.children_right_ = np.concatenate(rights).astype(np.int64)
        self.split_feature_ = np.concatenate(feats).astype(np.int64)
        self.split_threshold_ = np.concatenate(thrs).astype(np.float64)
        self.node_depth_ = np.concatenate(depths).astype(np.int64)
        self.n_node_samples_ = np.concatenate(counts).astype(np.int64)

    # ------------------------------------------------------------------ scoring tables
    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(meta, arrays)
        self._check_node_arrays()
        self._build_table()

    def _check_node_arrays(self) -> None:
        """Refuse loaded node arrays that do not form valid trees.

        The traversal skips bounds checks for speed, so a corrupted or hand-edited save
        must fail here with a clear error instead of giving silently wrong scores.
        """
        try:
            offsets = np.asarray(self.tree_offsets_, dtype=np.int64)
            left, right = self.children_left_, self.children_right_
            feature, depth = self.split_feature_, self.node_depth_
            n = left.shape[0]
            arrays = (right, feature, self.split_threshold_, depth, self.n_node_samples_)
            ok = (
                offsets.ndim == 1 and offsets.size >= 2 and offsets[0] == 0 and offsets[-1] == n
                and bool(np.all(np.diff(offsets) > 0))
                and all(a.shape == (n,) for a in arrays)
                and np.isfinite(self.split_threshold_).all()
                and int(self.max_samples_) >= 1
            )
            if ok:
                inner = np.flatnonzero(left >= 0)
                tree_of = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
                kids = np.concatenate([left[inner], right[inner]])
                parents = np.concatenate([inner, inner])
                ok = (
                    bool(np.all((right >= 0) == (left >= 0)))
                    and bool(np.all(kids > parents)) and bool(np.all(kids < n))
                    and bool(np.all(tree_of[kids] == tree_of[parents]))
                    and bool(np.all(depth[kids] == depth[parents] + 1))
                    and bool(np.all(depth[offsets[:-1]] == 0))
                    and bool(np.all(feature[inner] >= 0))
                    and bool(np.all(feature[inner] < self.n_features_in_))
                    and bool(np.all(self.n_node_samples_ >= 1))
                )
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise PersistenceError(
                f"saved IForest state is incomplete or malformed ({exc})."
            ) from exc
        if not ok:
            raise PersistenceError(
                "saved IForest node arrays do not form valid trees; the save is corrupt."
            )

    def _build_table(self) -> None:
        """Derive the traversal tables from the stored node arrays (cached, not saved)."""
        leaf_len = self.node_depth_ + average_path_length(self.n_node_samples_)
        n_trees = self.tree_offsets_.size - 1
        levels = int(self.node_depth_.max())
        if n_trees << (levels + 1) <= _MAX_PADDED_NODES:
            self._walker: _PaddedForest | _LinkedForest = _PaddedForest(self, leaf_len, levels)
        else:
            self._walker = _LinkedForest(self, leaf_len, levels)

    # ------------------------------------------------------------------ score
    def _score(self, X: np.ndarray) -> np.ndarray:
        if "_walker" not in self.__dict__:
            self._build_table()
        Xf = np.ascontiguousarray(X, dtype=np.float32)  # scikit-learn's trees test float32
        n_trees = self.tree_offsets_.size - 1
        block = max(1, _CELLS_PER_BLOCK // n_trees)
        total = np.empty(Xf.shape[0], dtype=np.float64)
        for start in range(0, Xf.shape[0], block):
            total[start : start + block] = self._walker.sum_path_lengths(Xf[start : start + block])
        c_psi = float(average_path_length(self.max_samples_))
        if c_psi == 0.0:  # a one-row forest: every path has length 0
            return np.full(Xf.shape[0], 0.5)
        return np.exp2(-total / (n_trees * c_psi))


# ---------------------------------------------------------------------- traversal
# Both walkers move every (row, tree) pair of a block down one level per step. Node ids
# stay within their tables by construction, so the gathers skip numpy's bounds checks
# (``mode="wrap"``) and write into buffers allocated once per block.


class _PaddedForest:
    """Trees padded to complete binary trees of the forest's height, stored level by level.

    At level ``k`` the slot of a node is ``tree * 2**k + position``, so its children sit
    at ``2 * slot`` and ``2 * slot + 1`` and no child table is read. A leaf above the
    last level is continued by padding nodes with threshold +inf (always go left); its
    path length is stored at its leftmost descendant on the last level. Used when the
    padded forest stays small (always for the default ``max_samples``).
    """

    def __init__(self, forest: IForest, leaf_len: np.ndarray, levels: int) -> None:
        left, right = forest.children_left_, forest.children_right_
        depth = forest.node_depth_
        offsets = forest.tree_offsets_
        n_trees = offsets.size - 1
        tree_of = np.repeat(np.arange(n_trees, dtype=np.int64), np.diff(offsets))
        inner = left >= 0
        pos = np.zeros(left.size, dtype=np.int64)  # position within the node's level
        self.feature: list[np.ndarray] = []
        self.threshold: list[np.ndarray] = []
        for k in range(levels):
            nodes = np.flatnonzero(inner & (depth == k))
            pos[left[nodes]] = 2 * pos[nodes]
            pos[right[nodes]] = 2 * pos[nodes] + 1
            slot = (tree_of[nodes] << k) + pos[nodes]
            feat = np.zeros(n_trees << k, dtype=np.intp)
            thr = np.full(n_trees << k, np.inf, dtype=np.float32)
            feat[slot] = forest.split_feature_[nodes]
            thr[slot] = _float32_floor(forest.split_threshold_[nodes])
            self.feature.append(feat)
            self.threshold.append(thr)
        leaves = np.flatnonzero(~inner)
        self.leaf_len = np.zeros(n_trees << levels, dtype=np.float64)
        slot = (tree_of[leaves] << levels) + (pos[leaves] << (levels - depth[leaves]))
        self.leaf_len[slot] = leaf_len[leaves]
        self.n_trees = n_trees

    def sum_path_lengths(self, Xf: np.ndarray) -> np.ndarray:
        m, d = Xf.shape
        slot = np.broadcast_to(np.arange(self.n_trees, dtype=np.intp), (m, self.n_trees)).copy()
        if self.feature:  # level 0: every row is at the root, a plain column selection
            slot <<= 1
            slot += Xf[:, self.feature[0]] > self.threshold[0]
        bufs = _Buffers(m, self.n_trees, d)
        flat = Xf.reshape(-1)
        for feat, thr in zip(self.feature[1:], self.threshold[1:]):
            bufs.go_right(flat, slot, feat, thr)
            slot <<= 1
            slot += bufs.right
        return np.take(self.leaf_len, slot, mode="wrap").sum(axis=1)


class _LinkedForest:
    """Trees as linked nodes: ``child[2i]`` / ``child[2i + 1]`` are node i's children.

    A leaf is its own child and has threshold +inf, so every pair can run the same
    number of levels. Used when padding to complete trees would take too much memory
    (very large ``max_samples``).
    """

    def __init__(self, forest: IForest, leaf_len: np.ndarray, levels: int) -> None:
        leaf = forest.children_left_ < 0
        own = np.arange(leaf.size, dtype=np.intp)
        self.child = np.empty(2 * leaf.size, dtype=np.intp)
        self.child[0::2] = np.where(leaf, own, forest.children_left_)
        self.child[1::2] = np.where(leaf, own, forest.children_right_)
        self.feature = np.where(leaf, 0, forest.split_feature_).astype(np.intp)
        self.threshold = _float32_floor(np.where(leaf, np.inf, forest.split_threshold_))
        self.leaf_len = leaf_len
        self.roots = forest.tree_offsets_[:-1].astype(np.intp)
        self.levels = levels

    def sum_path_lengths(self, Xf: np.ndarray) -> np.ndarray:
        m, d = Xf.shape
        node = np.broadcast_to(self.roots, (m, self.roots.size)).copy()
        bufs = _Buffers(m, self.roots.size, d)
        flat = Xf.reshape(-1)
        for _ in range(self.levels):
            bufs.go_right(flat, node, self.feature, self.threshold)
            node <<= 1
            node += bufs.right
            np.take(self.child, node, out=node, mode="wrap")
        return np.take(self.leaf_len, node, mode="wrap").sum(axis=1)


class _Buffers:
    """Work arrays of one (rows x trees) block and the split test that fills them."""

    def __init__(self, m: int, n_trees: int, d: int) -> None:
        shape = (m, n_trees)
        self.row_base = (np.arange(m, dtype=np.intp) * d)[:, None]
        self.cell = np.empty(shape, dtype=np.intp)
        self.value = np.empty(shape, dtype=np.float32)
        self.split = np.empty(shape, dtype=np.float32)
        self.right = np.empty(shape, dtype=bool)

    def go_right(
        self, flat: np.ndarray, node: np.ndarray, feature: np.ndarray, threshold: np.ndarray
    ) -> None:
        """``right[i, t]``: row i goes right at its current node of tree t."""
        np.take(feature, node, out=self.cell, mode="wrap")
        self.cell += self.row_base
        np.take(flat, self.cell, out=self.value, mode="wrap")
        np.take(threshold, node, out=self.split, mode="wrap")
        np.greater(self.value, self.split, out=self.right)


def _float32_floor(values: np.ndarray) -> np.ndarray:
    """Largest float32 <= each value: for float32 ``x``, ``x <= t`` iff ``x <= floor32(t)``.

    Lets the traversal compare in float32 with exactly the float64-threshold outcome.
    """
    out = values.astype(np.float32)
    over = out.astype(np.float64) > values
    out[over] = np.nextafter(out[over], np.float32(-np.inf))
    return out
