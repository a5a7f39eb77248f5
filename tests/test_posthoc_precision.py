"""Float32 features through the head-product post-hoc detectors (logit, shaping, GradNorm).

Network features arrive as float32 and stay float32 up to the head product; every score
must equal the float64 computation on the same values to float32 rounding, with the same
AUROC. (The feature-space detectors have their own, stricter version in
test_posthoc_feature.py: they also compare the fitted statistics.)
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import fit_both_precisions

from oddkit.metrics import auroc

#: absolute tolerance per method, beside rtol=1e-5: logits of size ~10 for the logit
#: methods; shaped logits of size up to ~100 (SCALE) for the shaping methods, so relative
#: to the largest score there; GradNorm's scores are far from zero (relative only).
ATOL = {
    **{name: lambda ref: 1e-7 for name in ("msp", "maxlogit", "energy", "entropy", "gen", "klmatching")},
    **{name: lambda ref: 1e-6 * np.abs(ref).max() for name in ("react", "ash_p", "ash_b", "ash_s", "scale", "dice")},
    "gradnorm": lambda ref: 0.0,
}


@pytest.mark.parametrize("name", sorted(ATOL))
def test_float32_features_score_as_float64_features(name, digits):
    X32, y = digits["X"].astype(np.float32), digits["y"]
    f32, f64 = fit_both_precisions(name, digits)
    ours, ref = f32.score(X32), f64.score(X32.astype(np.float64))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=ATOL[name](ref))
    assert abs(auroc(y, ours) - auroc(y, ref)) < 1e-4
