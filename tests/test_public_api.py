"""The public surfaces are what the docs teach; names that left them keep working, with a
DeprecationWarning that says where they live now."""

import importlib

import pytest

MOVED = [("ctxppl.infer", "optimize"), ("ctxppl.infer", "Stepper"),
         ("ctxppl.workflow", "fingerprint_data"), ("ctxppl.analysis", "param_draws"),
         ("ctxppl.analysis", "take_fits")]


@pytest.mark.parametrize("package,name", MOVED)
def test_moved_names_warn_and_still_resolve(package, name):
    mod = importlib.import_module(package)
    assert name not in mod.__all__
    with pytest.warns(DeprecationWarning, match=f"{package}.{name}"):
        value = getattr(mod, name)
    assert callable(value)


@pytest.mark.parametrize("package", ["ctxppl", "ctxppl.infer", "ctxppl.workflow",
                                     "ctxppl.analysis", "ctxppl.online", "ctxppl.estimators",
                                     "ctxppl.models", "ctxppl.nn", "ctxppl.plot",
                                     "ctxppl.handlers", "ctxppl.datasets", "ctxppl.cli"])
def test_every_exported_name_exists(package):
    mod = importlib.import_module(package)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing


def test_unknown_names_still_raise_attribute_error():
    import ctxppl.analysis
    import ctxppl.infer

    with pytest.raises(AttributeError, match="no_such_name"):
        ctxppl.infer.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_name"):
        ctxppl.analysis.no_such_name  # noqa: B018
