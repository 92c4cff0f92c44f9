"""A setting that lists columns names each column once (tester T26): ``--predictions prob_0
--predictions prob_0 --predictions prob_1 --renormalize`` made two classes of one column and
scored a wrong loss, exit 0. The rule has one home (config validation) and holds for the
command line, config files and Python, for every column list: predictions, targets, on,
keys, slices and compare's pair_on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import ConfigError


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    p = rng.dirichlet([1, 1, 1], n)
    y = rng.integers(0, 3, n)
    df = pd.DataFrame({"id": np.arange(n), "prob_0": p[:, 0], "prob_1": p[:, 1], "prob_2": p[:, 2],
                       "label": y, "t0": (y == 0) * 1.0, "t1": (y == 1) * 1.0, "t2": (y == 2) * 1.0,
                       "g": y % 2})
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    return df, path


CASES = {
    "predictions": ({"predictions": ["prob_0", "prob_0", "prob_1"], "renormalize": True},
                    ["--predictions", "prob_0", "--predictions", "prob_0", "--predictions", "prob_1",
                     "--renormalize"], "prob_0", "--predictions"),
    "targets": ({"targets": ["t0", "t1", "t0"]}, ["--targets", "t0,t1,t0"], "t0", "--targets"),
    "keys": ({"keys": ["id", "id"]}, ["--key", "id", "--key", "id"], "id", "--key"),
    "slices": ({"slices": ["g", "g"]}, ["--slices", "g,g"], "g", "--slices"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_column_named_twice_is_refused_naming_it_and_the_setting(data, tmp_path, case):
    df, path = data
    kwargs, flags, column, flag = CASES[case]
    setting = next(iter(kwargs))
    with pytest.raises(ConfigError, match=rf"column '{column}' is named twice in {setting}="):
        evalkit.evaluate(df, plots=False, **kwargs)
    with pytest.raises(ConfigError, match=rf"column '{column}' is named twice"):
        evalkit.evaluate(df, config=kwargs, plots=False)
    res = CliRunner().invoke(main, ["evaluate", str(path), *flags, "--no-plots", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert f"column '{column}' is named twice in {flag} " in res.output
    assert not (tmp_path / "o").exists()


def test_a_join_key_named_twice_is_refused(data):
    df, _ = data
    labels = df[["id", "label"]]
    with pytest.raises(ConfigError, match=r"column 'id' is named twice in on="):
        evalkit.evaluate(df.drop(columns="label"), labels=labels, on=["id", "id"], plots=False)


def test_compare_pair_on_named_twice_is_refused(data):
    df, _ = data
    run = evalkit.evaluate(df, keys=["id"], plots=False)
    with pytest.raises(ConfigError, match=r"column 'id' is named twice in pair_on="):
        evalkit.compare(run, run, pair_on=["id", "id"])


def test_each_column_once_is_still_accepted(data):
    df, _ = data
    r = evalkit.evaluate(df, predictions=["prob_0", "prob_1", "prob_2"], renormalize=True, keys=["id"],
                         plots=False)
    assert r.overall["count"] == len(df)
