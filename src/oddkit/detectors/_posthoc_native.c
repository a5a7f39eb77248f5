/*
 * Compiled kernels of the post-hoc detectors (posthoc/base.py, posthoc/feature.py):
 *
 *   class_logits   out[c, i] = scale[i] * (X[i] . W[c]) + b[c] for the rows i0 <= i < i1,
 *                  written class-major in float64, and whether every value is finite.
 *   shifted_sums   for z_i = X[i] - shifts[g_i] (g_i = labels[i], or 0): sums[g] += z_i
 *                  and, if asked, S += z_i z_i^T, in float64, for the rows i0 <= i < i1.
 *
 * class_logits:
 * Why: a head of 10 classes is a product too narrow for BLAS to run well, and the
 * detectors want the result class-major and in float64, which costs numpy a second pass
 * over it (benchmarks/posthoc_kernels.py times both).
 *
 * How: the product runs in X's dtype (float32 features: in float32, as in the network and
 * as BLAS did it), every class at once: the head is given transposed and padded, WT[j] =
 * the weights of feature j for all classes, in CV vectors of L lanes, and each row
 * accumulates sum_j X[i, j] * WT[j] over j in order, R rows at a time (the rows share each
 * load of WT[j]). Each logit is therefore a sum in a fixed order that does not depend on
 * how the rows are split into blocks or threads; whether a multiply and an add are fused
 * (FMA) depends on the machine's clone, as in BLAS. Scale, bias and the check run in
 * float64.
 *
 * Finiteness: a NaN or infinite feature makes every logit of its row NaN or infinite
 * (NaN * w = NaN, inf * 0 = NaN, inf * w = +-inf, and no finite term undoes either), so
 * finite logits prove the row finite; a non-finite logit means a non-finite feature or an
 * overflow, which the caller tells apart.
 *
 * shifted_sums: the training passes of Mahalanobis, RMDS, ViM, Residual, NECO and fDBD
 * (class sums, second moments about shifts). numpy needs a float64 copy of each block of
 * float32 rows, a shifted copy and a 64 x 64 product per block; here each row is widened
 * and shifted once, and the upper triangle of S (the caller mirrors it) is updated tile
 * by tile. Every entry of S and of sums is a float64 sum over the rows in row order,
 * whatever the vector width: the same numbers as a plain loop over the rows (FMA aside).
 * Meant for narrow rows (the work per row grows as d^2 with no cache blocking; BLAS is
 * the better choice for wide ones).
 *
 * X is passed as the span of memory from its first to its last value: row i starts at
 * X + i * ld (ld >= d), so a column slice of a larger matrix is read in place.
 *
 * The loops run without the GIL, so Python threads can split the rows. The module is
 * optional (setup.py): without it, numpy and BLAS do the same work.
 */
#include "_native_common.h"

typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));

/* NAME: rows of T, vectors VT of L lanes, CV vectors per row (C <= CV * L), R rows a block */
#define DEFINE_ROWS(NAME, T, VT, L, CV, R)                                            \
    WIDE_SIMD static int NAME(const T *X, Py_ssize_t ld, const T *WT, const double *b, \
                              const double *scale, Py_ssize_t n, Py_ssize_t d,        \
                              Py_ssize_t C, Py_ssize_t i0, Py_ssize_t i1, double *out) \
    {                                                                                 \
        int ok = 1;                                                                   \
        double chk[R] = {0}; /* sums of z - z: NaN once any z is NaN or infinite */  \
        for (Py_ssize_t i = i0; i < i1; i += R) {                                     \
            Py_ssize_t rows = i1 - i < R ? i1 - i : R;                                \
            const T *xr[R];                                                           \
            VT acc[R][CV];                                                            \
            for (int r = 0; r < R; r++) {                                             \
                xr[r] = X + (i + (r < rows ? r : 0)) * ld;                            \
                for (int v = 0; v < CV; v++) acc[r][v] = (VT){0};                     \
            }                                                                         \
            for (Py_ssize_t j = 0; j < d; j++) {                                      \
                VT w[CV];                                                             \
                memcpy(w, WT + j * CV * L, sizeof w);                                 \
                for (int r = 0; r < R; r++) {                                         \
                    T x = xr[r][j];                                                   \
                    for (int v = 0; v < CV; v++) acc[r][v] += w[v] * x;               \
                }                                                                     \
            }                                                                         \
            /* the block transposed: class c's R logits go to out[c, i:i + R] at once */ \
            T tmp[R][CV * L];                                                         \
            double sc[R], z[R];                                                       \
            memcpy(tmp, acc, sizeof tmp);                                             \
            for (int r = 0; r < R; r++) sc[r] = scale == NULL ? 1.0 : scale[i + (r < rows ? r : 0)]; \
            for (Py_ssize_t c = 0; c < C; c++) {                                      \
                for (int r = 0; r < R; r++) {                                         \
                    z[r] = (double)tmp[r][c] * sc[r] + b[c];                          \
                    chk[r] += z[r] - z[r];                                            \
                }                                                                     \
                if (rows == R)                                                        \
                    memcpy(out + c * n + i, z, sizeof z);                             \
                else                                                                  \
                    for (int r = 0; r < rows; r++) out[c * n + i + r] = z[r];         \
            }                                                                         \
        }                                                                             \
        for (int r = 0; r < R; r++) ok &= chk[r] == 0.0;                              \
        return ok;                                                                    \
    }

DEFINE_ROWS(f32_1, float, f32x16, 16, 1, 8)
DEFINE_ROWS(f64_1, double, f64x8, 8, 1, 8)
DEFINE_ROWS(f64_2, double, f64x8, 8, 2, 4)

/* the widest head: 16 classes (float32: 1 vector of 16; float64: 2 of 8). Wider heads pad
 * lanes and transpose more per row than BLAS's product and a transposing pass cost (a
 * development version that took them was slower from 20 classes on) */
#define MAX_VECTORS_F32 1
#define MAX_VECTORS_F64 2

/* rows of width d, widened and shifted into z (block x dp); S is dp x dp (dp: d rounded up to
 * 16; the padding is scratch). S's upper triangle is updated in tiles of 8 rows x 16 columns
 * held in registers while a block of rows streams past: each entry still adds the rows one
 * after the other, in row order. */
#define SUMS_BLOCK 128
#define DEFINE_SUMS(NAME, T)                                                          \
    WIDE_SIMD static void NAME(const T *X, Py_ssize_t ld, const int64_t *labels,      \
                               const double *shifts, Py_ssize_t d, Py_ssize_t dp, Py_ssize_t i0, \
                               Py_ssize_t i1, double *S, double *sums, double *z)     \
    {                                                                                 \
        for (Py_ssize_t i = i0; i < i1; i += SUMS_BLOCK) {                            \
            Py_ssize_t rows = i1 - i < SUMS_BLOCK ? i1 - i : SUMS_BLOCK;              \
            for (Py_ssize_t r = 0; r < rows; r++) {                                   \
                double *zr = z + r * dp;                                              \
                int64_t g = labels == NULL ? 0 : labels[i + r];                       \
                const T *x = X + (i + r) * ld;                                        \
                const double *sh = shifts + g * d;                                    \
                double *acc = sums + g * d;                                           \
                for (Py_ssize_t j = 0; j < d; j++) {                                  \
                    zr[j] = (double)x[j] - sh[j];                                     \
                    acc[j] += zr[j];                                                  \
                }                                                                     \
                for (Py_ssize_t j = d; j < dp; j++) zr[j] = 0.0;                      \
            }                                                                         \
            if (S == NULL) continue;                                                  \
            for (Py_ssize_t j0 = 0; j0 < dp; j0 += 8) {                               \
                for (Py_ssize_t k0 = j0 / 16 * 16; k0 < dp; k0 += 16) {               \
                    f64x8 lo[8], hi[8];                                               \
                    for (int u = 0; u < 8; u++) {                                     \
                        memcpy(&lo[u], S + (j0 + u) * dp + k0, sizeof lo[u]);         \
                        memcpy(&hi[u], S + (j0 + u) * dp + k0 + 8, sizeof hi[u]);     \
                    }                                                                 \
                    for (Py_ssize_t r = 0; r < rows; r++) {                           \
                        const double *zr = z + r * dp;                                \
                        f64x8 vl, vh;                                                 \
                        memcpy(&vl, zr + k0, sizeof vl);                              \
                        memcpy(&vh, zr + k0 + 8, sizeof vh);                          \
                        for (int u = 0; u < 8; u++) {                                 \
                            double a = zr[j0 + u];                                    \
                            lo[u] += a * vl;                                          \
                            hi[u] += a * vh;                                          \
                        }                                                             \
                    }                                                                 \
                    for (int u = 0; u < 8; u++) {                                     \
                        memcpy(S + (j0 + u) * dp + k0, &lo[u], sizeof lo[u]);         \
                        memcpy(S + (j0 + u) * dp + k0 + 8, &hi[u], sizeof hi[u]);     \
                    }                                                                 \
                }                                                                     \
            }                                                                         \
        }                                                                             \
    }

DEFINE_SUMS(sums_f32, float)
DEFINE_SUMS(sums_f64, double)

static PyObject *
shifted_sums(PyObject *self, PyObject *args)
{
    Py_buffer x, labels, shifts, S, sums;
    Py_ssize_t n, d, ld, G, i0, i1;
    int is_double, has_labels, want_S;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*py*nnnnnnpw*pw*", &x, &labels, &has_labels, &shifts, &n, &d,
                          &ld, &G, &i0, &i1, &is_double, &S, &want_S, &sums))
        return NULL;
    Py_ssize_t dp = (d + 15) / 16 * 16;
    double *z = NULL;
    if (d < 1 || ld < d || G < 1 || i0 < 0 || i1 > n || i0 > i1) {
        PyErr_SetString(PyExc_ValueError, "shifted_sums: bad shape or row range");
        goto done;
    }
    if (check_size(&x, n ? (n - 1) * ld + d : 0, is_double ? 8 : 4, "X") ||
        check_size(&labels, has_labels ? n : 0, 8, "labels") ||
        check_size(&shifts, G * d, 8, "shifts") || check_size(&S, want_S ? dp * dp : 0, 8, "S") ||
        check_size(&sums, G * d, 8, "sums"))
        goto done;
    if (has_labels) {
        const int64_t *lab = labels.buf;
        for (Py_ssize_t i = i0; i < i1; i++)
            if (lab[i] < 0 || lab[i] >= G) {
                PyErr_Format(PyExc_ValueError, "shifted_sums: label %lld of row %zd outside [0, %zd)",
                             (long long)lab[i], i, G);
                goto done;
            }
    }
    z = PyMem_RawMalloc(SUMS_BLOCK * dp * sizeof(double));
    if (z == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *lab = has_labels ? labels.buf : NULL;
    double *s_out = want_S ? S.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        sums_f64(x.buf, ld, lab, shifts.buf, d, dp, i0, i1, s_out, sums.buf, z);
    else
        sums_f32(x.buf, ld, lab, shifts.buf, d, dp, i0, i1, s_out, sums.buf, z);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(z);
    PyBuffer_Release(&x);
    PyBuffer_Release(&labels);
    PyBuffer_Release(&shifts);
    PyBuffer_Release(&S);
    PyBuffer_Release(&sums);
    return result;
}

static PyObject *
class_logits(PyObject *self, PyObject *args)
{
    Py_buffer x, wt, bias, scale, out;
    Py_ssize_t n, d, ld, C, i0, i1;
    int is_double, has_scale, ok = 1;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*pnnnnnnpw*", &x, &wt, &bias, &scale, &has_scale, &n,
                          &d, &ld, &C, &i0, &i1, &is_double, &out))
        return NULL;
    Py_ssize_t lanes = is_double ? 8 : 16, cv = (C + lanes - 1) / lanes;
    Py_ssize_t itemsize = is_double ? 8 : 4;
    if (d < 1 || ld < d || C < 1 || cv > (is_double ? MAX_VECTORS_F64 : MAX_VECTORS_F32) || i0 < 0 ||
        i1 > n || i0 > i1) {
        PyErr_SetString(PyExc_ValueError, "class_logits: bad shape or row range");
        goto done;
    }
    if (check_size(&x, n ? (n - 1) * ld + d : 0, itemsize, "X") || check_size(&wt, d * cv * lanes, itemsize, "WT") ||
        check_size(&bias, C, 8, "b") || check_size(&scale, has_scale ? n : 0, 8, "scale") ||
        check_size(&out, C * n, 8, "out"))
        goto done;
    const double *sc = has_scale ? scale.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (!is_double)
        ok = f32_1(x.buf, ld, wt.buf, bias.buf, sc, n, d, C, i0, i1, out.buf);
    else
        ok = (cv == 1 ? f64_1 : f64_2)(x.buf, ld, wt.buf, bias.buf, sc, n, d, C, i0, i1, out.buf);
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&x);
    PyBuffer_Release(&wt);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&scale);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"class_logits", class_logits, METH_VARARGS,
     "class_logits(X, WT, b, scale, has_scale, n, d, ld, C, i0, i1, is_double, out) -> all finite: "
     "out[c, i] = scale[i] * (X[i] . W[c]) + b[c] for i0 <= i < i1"},
    {"shifted_sums", shifted_sums, METH_VARARGS,
     "shifted_sums(X, labels, has_labels, shifts, n, d, ld, G, i0, i1, is_double, S, want_S, sums): "
     "z_i = X[i] - shifts[labels[i]]; sums[g] += z_i, S (dp x dp, dp = d rounded up to 16; "
     "upper triangle) += z_i z_i^T"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_posthoc_native", "Compiled kernels of oddkit's post-hoc detectors.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__posthoc_native(void)
{
    return PyModule_Create(&module);
}
