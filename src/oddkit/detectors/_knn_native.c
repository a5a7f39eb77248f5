/*
 * Compiled kernels for oddkit's exact k-nearest-neighbour search (_neighbors.py), for
 * the two steps that numpy can only express with many passes over memory:
 *
 *   smallest  the m smallest values of each row of a float32/float64 GEMM result (plus
 *             a per-column term), with a bound that every value left out is at least
 *             the largest value kept: the candidates of the search and its certificate.
 *   refine    the exact float64 distances of each query row to its candidate groups,
 *             ordered by (distance, group) and spread over k slots by group sizes.
 *
 * Arrays are passed as C-contiguous buffers; shapes are checked against buffer sizes.
 * The loops run without the GIL, so Python threads can run them side by side.
 * The module is optional (setup.py): without it, numpy does the same work.
 */
#include "_native_common.h"

/*
 * Selection of the m smallest values of a row of n, in four steps. The columns are cut
 * into nb strided blocks of b (block j holds columns j, j + nb, j + 2 nb, ...).
 *  1. Every block's minimum: nb running minima, updated by contiguous, vectorisable
 *     loops over the row (the only step that reads every value).
 *  2. tau = the m-th smallest block minimum (quickselect on a copy). At least m values
 *     are at or below tau (one in each of the m blocks), so tau is at or above the
 *     row's m-th smallest value.
 *  3. Every value at or below tau, from the blocks whose minimum is: usually a few more
 *     than m.
 *  4. The m smallest of those by (value, column) (quickselect), and the largest, kth.
 * Every value left out is at least kth: it is above tau, or it lost in step 4; a value
 * equal to kth that is left out has a larger column than every kept value equal to
 * kth (ties go to the lower column, as the exact search's ties go to the lower group).
 * NaN counts as +inf. The cost is one vectorised pass plus O(nb + m b) scalar work;
 * b ~ 2 sqrt(n / m) keeps the scalar part small.
 */

/*
 * NAME(v, id, n, k): reorder v[0..n) (no NaN) so that position k holds the (k+1)-th
 * smallest, nothing after it being smaller and nothing before it larger (quickselect).
 * With WITH_ID, the order is by (value, id) (distinct ids, moved along with v); without,
 * by value alone and id is not used (faster where only the value matters).
 */
#define DEFINE_NTH(NAME, T, WITH_ID)                                                  \
    static inline int NAME##_lt(T va, int64_t ia, T vb, int64_t ib)                  \
    {                                                                                 \
        return va < vb || (WITH_ID && va == vb && ia < ib);                           \
    }                                                                                 \
    static void NAME(T *v, int64_t *id, Py_ssize_t n, Py_ssize_t k)                   \
    {                                                                                 \
        Py_ssize_t lo = 0, hi = n - 1;                                                \
        while (hi - lo >= 16) {                                                       \
            Py_ssize_t mid = lo + (hi - lo) / 2, p = mid;                             \
            int ab = NAME##_lt(v[lo], WITH_ID ? id[lo] : 0, v[mid], WITH_ID ? id[mid] : 0); \
            int bc = NAME##_lt(v[mid], WITH_ID ? id[mid] : 0, v[hi], WITH_ID ? id[hi] : 0); \
            int ac = NAME##_lt(v[lo], WITH_ID ? id[lo] : 0, v[hi], WITH_ID ? id[hi] : 0); \
            if (ab != bc) p = (ab == ac) ? hi : lo; /* median of three */             \
            T pv = v[p];                                                              \
            int64_t pi = WITH_ID ? id[p] : 0;                                         \
            Py_ssize_t i = lo, j = hi;                                                \
            while (i <= j) {                                                          \
                while (NAME##_lt(v[i], WITH_ID ? id[i] : 0, pv, pi)) i++;             \
                while (NAME##_lt(pv, pi, v[j], WITH_ID ? id[j] : 0)) j--;             \
                if (i <= j) {                                                         \
                    T tv = v[i]; v[i] = v[j]; v[j] = tv;                              \
                    if (WITH_ID) { int64_t ti = id[i]; id[i] = id[j]; id[j] = ti; }   \
                    i++;                                                              \
                    j--;                                                              \
                }                                                                     \
            }                                                                         \
            if (k <= j) hi = j;                                                       \
            else if (k >= i) lo = i;                                                  \
            else return;                                                              \
        }                                                                             \
        for (Py_ssize_t i = lo + 1; i <= hi; i++) { /* insertion sort of the rest */  \
            T tv = v[i];                                                              \
            int64_t ti = WITH_ID ? id[i] : 0;                                         \
            Py_ssize_t j = i;                                                         \
            for (; j > lo && NAME##_lt(tv, ti, v[j - 1], WITH_ID ? id[j - 1] : 0); j--) { \
                v[j] = v[j - 1];                                                      \
                if (WITH_ID) id[j] = id[j - 1];                                       \
            }                                                                         \
            v[j] = tv;                                                                \
            if (WITH_ID) id[j] = ti;                                                  \
        }                                                                             \
    }

#define DEFINE_SMALLEST(NAME, T)                                                      \
    DEFINE_NTH(NAME##_nth, T, 1)                                                      \
    DEFINE_NTH(NAME##_nth_value, T, 0)                                                \
                                                                                      \
    /* step 1: mins[j] = min over the block j of row + norms (NaN never wins) */        \
    WIDE_SIMD static void NAME##_block_mins(const T *row, const T *norms,             \
                                            Py_ssize_t n_cols, Py_ssize_t nb, T *mins) \
    {                                                                                 \
        for (Py_ssize_t j = 0; j < nb; j++) mins[j] = (T)INFINITY;                    \
        for (Py_ssize_t o = 0; o < n_cols; o += nb) {                                 \
            Py_ssize_t len = n_cols - o < nb ? n_cols - o : nb;                       \
            const T *r = row + o, *q = norms + o;                                     \
            for (Py_ssize_t j = 0; j < len; j++) {                                    \
                T v = r[j] + q[j];                                                    \
                mins[j] = v < mins[j] ? v : mins[j];                                  \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
                                                                                      \
    /* work: 2 nb + n values of T (wv) and nb + n int64 (wi) */                         \
    static void NAME##_rows(const T *t, const T *norms, Py_ssize_t n_rows,            \
                            Py_ssize_t n_cols, Py_ssize_t m, Py_ssize_t b,            \
                            int64_t *idx, T *kth, T *wv, int64_t *wi)                 \
    {                                                                                 \
        Py_ssize_t nb = (n_cols + b - 1) / b;                                         \
        T *mins = wv, *scratch = wv + nb, *vals = wv + 2 * nb;                        \
        int64_t *cols = wi + nb;                                                      \
        for (Py_ssize_t i = 0; i < n_rows; i++) {                                     \
            const T *row = t + i * n_cols;                                            \
            Py_ssize_t count = 0;                                                     \
            if (nb <= m) { /* short rows: every value is a candidate */               \
                for (Py_ssize_t c = 0; c < n_cols; c++) {                             \
                    T v = row[c] + norms[c];                                          \
                    vals[count] = (v == v) ? v : (T)INFINITY;                         \
                    cols[count++] = c;                                                \
                }                                                                     \
            } else {                                                                  \
                NAME##_block_mins(row, norms, n_cols, nb, mins);                      \
                for (Py_ssize_t j = 0; j < nb; j++) scratch[j] = mins[j];             \
                NAME##_nth_value(scratch, NULL, nb, m - 1);                           \
                T tau = scratch[m - 1];                                               \
                for (Py_ssize_t j = 0; j < nb; j++) {                                 \
                    if (!(mins[j] <= tau) && tau == tau) continue;                    \
                    for (Py_ssize_t c = j; c < n_cols; c += nb) {                     \
                        T v = row[c] + norms[c];                                      \
                        if (v > tau) continue;                                        \
                        vals[count] = (v == v) ? v : (T)INFINITY;                     \
                        cols[count++] = c;                                            \
                    }                                                                 \
                }                                                                     \
            }                                                                         \
            if (count > m) NAME##_nth(vals, cols, count, m - 1);                      \
            T top = vals[0];                                                          \
            for (Py_ssize_t j = 0; j < m; j++) {                                      \
                idx[i * m + j] = cols[j];                                             \
                top = vals[j] > top ? vals[j] : top;                                  \
            }                                                                         \
            kth[i] = top;                                                             \
        }                                                                             \
    }

DEFINE_SMALLEST(smallest_f32, float)
DEFINE_SMALLEST(smallest_f64, double)

static PyObject *
smallest(PyObject *self, PyObject *args)
{
    Py_buffer t, norms, idx, kth;
    Py_ssize_t n_rows, n_cols, m;
    int is_double;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*w*p", &t, &norms, &n_rows, &n_cols, &m, &idx,
                          &kth, &is_double))
        return NULL;
    Py_ssize_t size = is_double ? 8 : 4;
    void *wv = NULL, *wi = NULL;
    if (m < 1 || m > n_cols) {
        PyErr_SetString(PyExc_ValueError, "smallest: need 1 <= m <= n_cols");
        goto done;
    }
    if (check_size(&t, n_rows * n_cols, size, "t") || check_size(&norms, n_cols, size, "norms") ||
        check_size(&idx, n_rows * m, 8, "idx") || check_size(&kth, n_rows, size, "kth"))
        goto done;
    /* 2 sqrt(n / m): measured fastest on rows of 700 to 7,000 values (factors 1 to 4) */
    Py_ssize_t b = (Py_ssize_t)(2.0 * sqrt((double)n_cols / (double)m) + 0.5);
    if (b < 1) b = 1;
    Py_ssize_t nb = (n_cols + b - 1) / b;
    wv = PyMem_RawMalloc((2 * nb + n_cols) * size);
    wi = PyMem_RawMalloc((nb + n_cols) * 8);
    if (wv == NULL || wi == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        smallest_f64_rows(t.buf, norms.buf, n_rows, n_cols, m, b, idx.buf, kth.buf, wv, wi);
    else
        smallest_f32_rows(t.buf, norms.buf, n_rows, n_cols, m, b, idx.buf, kth.buf, wv, wi);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(wv);
    PyMem_RawFree(wi);
    PyBuffer_Release(&t);
    PyBuffer_Release(&norms);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&kth);
    return result;
}

/*
 * refine(Q, R, cand, counts, own, n_rows, m, d, n_ref, k, all, sq, grp, rank, kth)
 *     The k nearest training rows of each query row Q[i] among candidate groups (the
 *     distinct training rows R[g], g = cand[i, j], -1 = none; every group when all is
 *     set), exactly: squared distances summed in order of the features (no
 *     reassociation, no fused multiply-add: the same on every compiler and CPU), groups ordered by
 *     (squared distance, group number), group g filling counts[g] consecutive slots
 *     (one less for the query's own group own[i] when own holds one, -1 otherwise).
 *     Writes per slot the squared distance, the group and the copy within the group,
 *     and kth[i] = the k-th squared distance, or +inf when the candidates hold fewer
 *     than k rows (the slots are then not meaningful).
 */
/* candidates whose distances are summed side by side */
#define LANES 4

static inline int
before(double sa, int64_t ga, double sb, int64_t gb)
{
    return sa < sb || (sa == sb && ga < gb);
}

static void
refine_rows(const double *Q, const double *R, const int64_t *cand, const int64_t *counts,
            const int64_t *own, Py_ssize_t n_rows, Py_ssize_t m, Py_ssize_t d, Py_ssize_t n_ref,
            Py_ssize_t k, int all, double *sq, int64_t *grp, int64_t *rank, double *kth,
            double *bs, int64_t *bg)
{
    Py_ssize_t cap = k + 1; /* k + 1 groups always fill k slots (only the own group can give 0) */
    Py_ssize_t width = all ? n_ref : m;
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        const double *qi = Q + i * d;
        Py_ssize_t len = 0;
        for (Py_ssize_t j0 = 0; j0 < width; j0 += LANES) {
            /* LANES candidates at once: independent sums (each in order of the features) */
            int64_t g[LANES];
            const double *rg[LANES];
            double s[LANES];
            for (int u = 0; u < LANES; u++) {
                Py_ssize_t j = j0 + u;
                g[u] = j >= width ? -1 : all ? j : cand[i * m + j];
                if (g[u] >= n_ref) g[u] = -1;
                rg[u] = R + (g[u] < 0 ? 0 : g[u]) * d;
                s[u] = 0.0;
            }
            for (Py_ssize_t c = 0; c < d; c++) {
                for (int u = 0; u < LANES; u++) {
                    double diff = rg[u][c] - qi[c];
                    s[u] += diff * diff;
                }
            }
            for (int u = 0; u < LANES; u++) {
                if (g[u] < 0) continue;
                if (len == cap && !before(s[u], g[u], bs[len - 1], bg[len - 1])) continue;
                Py_ssize_t p = len < cap ? len++ : cap - 1; /* insertion into the sorted buffer */
                for (; p > 0 && before(s[u], g[u], bs[p - 1], bg[p - 1]); p--) {
                    bs[p] = bs[p - 1];
                    bg[p] = bg[p - 1];
                }
                bs[p] = s[u];
                bg[p] = g[u];
            }
        }
        Py_ssize_t slot = 0;
        int64_t self_group = own == NULL ? -1 : own[i];
        for (Py_ssize_t e = 0; e < len && slot < k; e++) {
            int64_t g = bg[e];
            int64_t c = counts[g] - (g == self_group);
            for (int64_t r = 0; r < c && slot < k; r++, slot++) {
                sq[i * k + slot] = bs[e];
                grp[i * k + slot] = g;
                rank[i * k + slot] = r;
            }
        }
        kth[i] = slot == k ? sq[i * k + k - 1] : INFINITY;
        for (; slot < k; slot++) { /* short: placeholders (the caller searches again) */
            sq[i * k + slot] = INFINITY;
            grp[i * k + slot] = len ? bg[len - 1] : 0;
            rank[i * k + slot] = 0;
        }
    }
}

static PyObject *
refine(PyObject *self, PyObject *args)
{
    Py_buffer q, r, cand, counts, own, sq, grp, rank, kth;
    Py_ssize_t n_rows, m, d, n_ref, k;
    int all, has_own;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*pnnnnnpw*w*w*w*", &q, &r, &cand, &counts, &own,
                          &has_own, &n_rows, &m, &d, &n_ref, &k, &all, &sq, &grp, &rank, &kth))
        return NULL;
    double *bs = NULL;
    int64_t *bg = NULL;
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "refine: need k >= 1");
        goto done;
    }
    if (check_size(&q, n_rows * d, 8, "Q") || check_size(&r, n_ref * d, 8, "R") ||
        check_size(&cand, all ? 0 : n_rows * m, 8, "cand") ||
        check_size(&counts, n_ref, 8, "counts") ||
        check_size(&own, has_own ? n_rows : 0, 8, "own") ||
        check_size(&sq, n_rows * k, 8, "sq") || check_size(&grp, n_rows * k, 8, "grp") ||
        check_size(&rank, n_rows * k, 8, "rank") || check_size(&kth, n_rows, 8, "kth"))
        goto done;
    bs = PyMem_RawMalloc((k + 1) * sizeof(double));
    bg = PyMem_RawMalloc((k + 1) * sizeof(int64_t));
    if (bs == NULL || bg == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    refine_rows(q.buf, r.buf, cand.buf, counts.buf, has_own ? own.buf : NULL, n_rows, m, d,
                n_ref, k, all, sq.buf, grp.buf, rank.buf, kth.buf, bs, bg);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(bs);
    PyMem_RawFree(bg);
    PyBuffer_Release(&q);
    PyBuffer_Release(&r);
    PyBuffer_Release(&cand);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&own);
    PyBuffer_Release(&sq);
    PyBuffer_Release(&grp);
    PyBuffer_Release(&rank);
    PyBuffer_Release(&kth);
    return result;
}

static PyMethodDef methods[] = {
    {"smallest", smallest, METH_VARARGS,
     "smallest(t, norms, n_rows, n_cols, m, idx, kth, is_double): per-row m smallest of t + norms"},
    {"refine", refine, METH_VARARGS,
     "refine(Q, R, cand, counts, own, has_own, n_rows, m, d, n_ref, k, all, sq, grp, rank, kth)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_knn_native", "Compiled kernels of oddkit's neighbour search.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__knn_native(void)
{
    return PyModule_Create(&module);
}
