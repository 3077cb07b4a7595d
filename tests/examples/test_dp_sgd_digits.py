import math

import pytest
from conftest import load


def test_dp_sgd_trains_nc_and_groupnorm_at_the_same_budget():
    pytest.importorskip("opacus")
    results = load("dp_sgd_digits").main(["--epochs", "1", "--max-steps", "6", "--epsilon", "8"])
    assert set(results) == {"nc", "gn"}
    for norm, (acc, eps) in results.items():
        assert 0.0 <= acc <= 1.0, norm
        # the accountant has spent part of the budget: 6 of the 1 epoch's ~21 steps
        assert 0 < eps < 8, norm
    assert math.isclose(results["nc"][1], results["gn"][1], rel_tol=1e-9), "same noise, steps and sampling"
