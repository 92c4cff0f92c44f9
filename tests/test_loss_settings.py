"""One validation of ``eps`` and ``sum_tol`` for ``cross_entropy`` and ``evaluate`` (rt-api9
F27): ``cross_entropy(sum_tol=-1)`` refused a perfect row blaming the data, ``sum_tol=2`` and
``eps="1e-7"`` were accepted there while ``evaluate`` refused them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import evalkit
from evalkit.errors import ConfigError, UsageError


@pytest.mark.parametrize("kw", [{"sum_tol": -1}, {"sum_tol": math.nan}, {"sum_tol": 0}, {"sum_tol": 2},
                                {"sum_tol": math.inf}, {"sum_tol": "0.01"}, {"eps": "1e-7"}, {"eps": True},
                                {"eps": 0.5}])
def test_both_entry_points_refuse_the_same_settings(kw):
    with pytest.raises(UsageError, match=f"{next(iter(kw))} must be"):
        evalkit.cross_entropy([[0.5, 0.5]], [0], **kw)
    with pytest.raises(ConfigError, match=next(iter(kw))):
        evalkit.evaluate(pd.DataFrame({"prob": [0.3, 0.6], "label": [0, 1]}), plots=False, **kw)


def test_valid_settings_are_accepted_by_both():
    assert evalkit.cross_entropy([[0.5, 0.5]], [0], sum_tol=0.01, eps=1e-6) == pytest.approx(math.log(2))
