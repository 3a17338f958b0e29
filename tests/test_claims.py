"""Claims print one stable line when they hold and fail loudly, with the evidence, when not."""

import numpy as np
import pytest
import torch

from pruneplug import claims


def test_a_claim_that_holds_prints_only_the_claim(capsys):
    claims.at_least("accuracy stays above 90 %", 0.9531234, 0.9)
    claims.at_most("loss stays below 1", torch.tensor(0.25), 1.0)
    claims.between("sparsity is about 90 %", np.float32(0.9), 0.89, 0.91)
    claims.greater("distillation beats fine-tuning", 0.96, 0.94, margin=0.01)
    assert capsys.readouterr().out.splitlines() == [
        "✓ accuracy stays above 90 %",
        "✓ loss stays below 1",
        "✓ sparsity is about 90 %",
        "✓ distillation beats fine-tuning",
    ]


@pytest.mark.parametrize(
    ("call", "evidence"),
    [
        (lambda: claims.at_least("high", 0.8, 0.9), "value = 0.8; expected >= 0.9"),
        (lambda: claims.at_most("low", 0.8, 0.5), "value = 0.8; expected <= 0.5"),
        (lambda: claims.between("near", 0.2, 0.4, 0.6), "expected in [0.4, 0.6]"),
        (
            lambda: claims.greater("better", 0.95, 0.945, 0.01),
            "a - b = 0.005; expected a - b > 0.01",
        ),
    ],
)
def test_a_claim_that_fails_names_the_claim_the_measurement_and_the_bound(call, evidence, capsys):
    with pytest.raises(claims.ClaimError, match="claim does not hold") as error:
        call()
    assert evidence in str(error.value)
    assert capsys.readouterr().out == ""


def test_nan_and_non_numbers_are_refused():
    with pytest.raises(claims.ClaimError, match="NaN"):
        claims.at_least("finite", float("nan"), 0.0)
    with pytest.raises(TypeError, match="real number"):
        claims.at_least("numeric", "0.9", 0.5)
    with pytest.raises(TypeError, match="non-empty sentence"):
        claims.check("  ", True)
    with pytest.raises(ValueError, match="swap them"):
        claims.between("order", 0.5, 0.6, 0.4)
    with pytest.raises(ValueError, match=r"the claim's bound low=nan must be a number"):
        claims.at_least("a bound that holds for nothing", 0.9, float("nan"))
    with pytest.raises(ValueError, match="bound margin=True"):
        claims.greater("flag", 0.9, 0.5, margin=True)
    claims.between("tensor and NumPy bounds", 0.5, torch.tensor(0.4), np.float32(0.6))


def test_evidence_that_is_not_a_number_still_prints():
    with pytest.raises(claims.ClaimError, match=r"measured S = \{'50 %': 2.1\}, R = 2.85"):
        claims.check("S < R", False, {"S": {"50 %": 2.1}, "R": 2.85})  # type: ignore[dict-item]
