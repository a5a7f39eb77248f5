"""Build configuration beyond pyproject.toml: the optional compiled kernels (neighbour search,
small head products).

Both extensions are optional: without a C compiler the install still succeeds and oddkit
falls back to numpy (same results up to rounding, slower; ``oddkit.detectors._neighbors
._native`` and ``oddkit.detectors.posthoc.base._posthoc_native`` are None then). The head
kernel may fuse multiplies and adds (``-ffp-contract=fast``), as BLAS does; the neighbour
search's certificates need every rounding step as written, so it may not.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "oddkit.detectors._knn_native",
            sources=["src/oddkit/detectors/_knn_native.c"],
            depends=["src/oddkit/detectors/_native_common.h"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
        Extension(
            "oddkit.detectors._posthoc_native",
            sources=["src/oddkit/detectors/_posthoc_native.c"],
            depends=["src/oddkit/detectors/_native_common.h"],
            extra_compile_args=["-O3", "-ffp-contract=fast"],
            optional=True,
        ),
    ]
)
