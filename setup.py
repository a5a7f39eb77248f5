"""Build configuration beyond pyproject.toml: the optional compiled neighbour-search kernels.

The extension is optional: without a C compiler the install still succeeds and oddkit
falls back to its numpy implementation (same results, slower; ``oddkit.detectors._neighbors
.NATIVE`` says which one is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "oddkit.detectors._knn_native",
            sources=["src/oddkit/detectors/_knn_native.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
