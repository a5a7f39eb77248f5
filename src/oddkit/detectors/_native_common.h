/*
 * What oddkit's compiled kernels (_knn_native.c, _posthoc_native.c) share: the includes, the
 * vector-width clones and the check of a buffer's size against the count a call needs.
 */
#ifndef ODDKIT_NATIVE_COMMON_H
#define ODDKIT_NATIVE_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* the hot loops are compiled for wider vector units too, picked at load time (GCC on
 * x86-64 Linux) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define WIDE_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDE_SIMD
#endif

/* -1 with a ValueError unless buf holds at least count items of itemsize bytes */
static int
check_size(const Py_buffer *buf, Py_ssize_t count, Py_ssize_t itemsize, const char *what)
{
    if (count < 0 || buf->len < count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: buffer holds %zd bytes, %zd needed", what,
                     buf->len, count * itemsize);
        return -1;
    }
    return 0;
}

#endif
