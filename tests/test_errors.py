from __future__ import annotations

import inspect

import pytest

from medcurric import errors
from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option


def test_every_error_is_a_medcurric_error_and_a_builtin() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.MedcurricError) and c is not errors.MedcurricError
    ]
    assert classes
    builtins = (ValueError, TypeError, FileNotFoundError, ImportError)
    for cls in classes:
        assert issubclass(cls, builtins), cls


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("nibabel"):
            raise ImportError("nope")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    import sys

    monkeypatch.delitem(sys.modules, "nibabel", raising=False)
    with pytest.raises(errors.MissingDependencyError, match=r"medcurric\[io\]") as info:
        require("nibabel", feature="read_nifti")
    assert isinstance(info.value, ImportError)


class Color(StrEnum):
    RED = "red"
    LIME = "lime"


def test_look_up_option_suggests() -> None:
    assert look_up_option("Red", Color) is Color.RED
    with pytest.raises(errors.InvalidOptionError, match="Did you mean 'lime'"):
        look_up_option("lmie", Color, name="colour")
    with pytest.raises(ValueError, match="one of"):
        look_up_option(3, Color)
