"""The examples in public docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["evalkit", "evalkit.loss", "evalkit.api"])
def test_docstring_examples(module: str):
    mod = importlib.import_module(module)
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def _public():
    import evalkit

    out = {}
    for name in evalkit.__all__:
        obj = getattr(evalkit, name)
        if callable(obj) and not (isinstance(obj, type) and issubclass(obj, BaseException | Warning)):
            out[name] = obj
    return out


def test_public_docstrings_say_shapes_units_errors_and_sources():
    """Every public function and class of ``evalkit.__all__`` (issue 14.6): a Raises section
    naming only evalkit errors that exist; losses in nats (in its own docstring or in that of
    the result it returns); the functions that define figures cite where the definition comes
    from; no CLI flag advice in an API docstring."""
    import inspect
    import re

    import evalkit

    public = _public()
    assert {"evaluate", "run", "compare", "history", "cross_entropy", "EvalResult", "EvalConfig"} <= set(public)
    returns = {"evaluate": "EvalResult", "run": "EvalResult", "compare": "CompareResult", "history": "HistoryResult"}
    for name, obj in public.items():
        doc = inspect.getdoc(obj) or ""
        assert len(doc.splitlines()) >= 5, name
        if name != "EvalConfig":  # which says how its fields are spelled as flags
            assert not re.search(r"(?<![\w-])--[a-z]", doc), (name, "CLI flag in an API docstring")
        if inspect.isfunction(obj) or isinstance(obj, type) and name == "EvalConfig":
            assert re.search(r"^Raises\n-+$", doc, flags=re.M), (name, "no Raises section")
            raises = doc.split("Raises", 1)[1].split("\n\n")[0]
            for err in re.findall(r"\b([A-Z]\w*Error)\b", raises):
                assert issubclass(getattr(evalkit, err), evalkit.EvalkitError), (name, err)
        own = "nats" in doc
        via = name in returns and "nats" in (inspect.getdoc(public[returns[name]]) or "")
        assert own or via, (name, "units")
    for name in ("cross_entropy", "evaluate", "compare"):
        assert re.search(r"\b(19|20)\d\d\b", inspect.getdoc(public[name]) or ""), (name, "no source cited")
    ce = inspect.getdoc(evalkit.cross_entropy)
    assert "(n, K)" in ce and "(n,)" in ce and "Shape (n,)" in ce
