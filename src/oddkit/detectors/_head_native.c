/*
 * Compiled kernel for the post-hoc detectors' small head products (posthoc/base.py):
 *
 *   class_logits  out[c, i] = scale[i] * (X[i] . W[c]) + b[c] for the rows i0 <= i < i1,
 *                 written class-major in float64, and whether every value is finite.
 *
 * Why: a head of 10 classes is a product too narrow for BLAS to run well (OpenBLAS took
 * 0.46 ms for 10,000 x 64 x 10 in float32 on one thread), and the detectors want the
 * result class-major and in float64, which costs numpy a second pass over it.
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
 * The loop runs without the GIL, so Python threads can split the rows. The module is
 * optional (setup.py): without it, numpy and BLAS do the same work.
 */
#include "_native_common.h"

typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));

/* NAME: rows of T, vectors VT of L lanes, CV vectors per row (C <= CV * L), R rows a block */
#define DEFINE_ROWS(NAME, T, VT, L, CV, R)                                            \
    WIDE_SIMD static int NAME(const T *X, const T *WT, const double *b,               \
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
                xr[r] = X + (i + (r < rows ? r : 0)) * d;                             \
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
DEFINE_ROWS(f32_2, float, f32x16, 16, 2, 4)
DEFINE_ROWS(f64_1, double, f64x8, 8, 1, 8)
DEFINE_ROWS(f64_2, double, f64x8, 8, 2, 4)
DEFINE_ROWS(f64_4, double, f64x8, 8, 4, 2)

/* the widest head: float32 32 classes, float64 32 classes */
#define MAX_VECTORS_F32 2
#define MAX_VECTORS_F64 4

static PyObject *
class_logits(PyObject *self, PyObject *args)
{
    Py_buffer x, wt, bias, scale, out;
    Py_ssize_t n, d, C, i0, i1;
    int is_double, has_scale, ok = 1;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*pnnnnnpw*", &x, &wt, &bias, &scale, &has_scale, &n,
                          &d, &C, &i0, &i1, &is_double, &out))
        return NULL;
    Py_ssize_t lanes = is_double ? 8 : 16, cv = (C + lanes - 1) / lanes;
    Py_ssize_t itemsize = is_double ? 8 : 4;
    if (d < 1 || C < 1 || cv > (is_double ? MAX_VECTORS_F64 : MAX_VECTORS_F32) || i0 < 0 ||
        i1 > n || i0 > i1) {
        PyErr_SetString(PyExc_ValueError, "class_logits: bad shape or row range");
        goto done;
    }
    if (cv == 3) cv = 4; /* float64 heads of 17-24 classes use the 4-vector kernel */
    if (check_size(&x, n * d, itemsize, "X") || check_size(&wt, d * cv * lanes, itemsize, "WT") ||
        check_size(&bias, C, 8, "b") || check_size(&scale, has_scale ? n : 0, 8, "scale") ||
        check_size(&out, C * n, 8, "out"))
        goto done;
    const double *sc = has_scale ? scale.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (!is_double)
        ok = (cv == 1 ? f32_1 : f32_2)(x.buf, wt.buf, bias.buf, sc, n, d, C, i0, i1, out.buf);
    else
        ok = (cv == 1 ? f64_1 : cv == 2 ? f64_2 : f64_4)(x.buf, wt.buf, bias.buf, sc, n, d, C,
                                                         i0, i1, out.buf);
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
     "class_logits(X, WT, b, scale, has_scale, n, d, C, i0, i1, is_double, out) -> all finite: "
     "out[c, i] = scale[i] * (X[i] . W[c]) + b[c] for i0 <= i < i1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_head_native", "Compiled kernel of oddkit's small head products.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__head_native(void)
{
    return PyModule_Create(&module);
}
