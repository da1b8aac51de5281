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
    builtins = (ValueError, TypeError, FileNotFoundError, ImportError, PermissionError, RuntimeError, ConnectionError)
    for cls in classes:
        assert issubclass(cls, builtins), cls


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from medcurric import _optional

    real = importlib.import_module

    def fake_import_module(name: str, *args, **kwargs):
        if name.split(".")[0] == "nibabel":
            raise ImportError("No module named 'nibabel'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_optional.importlib, "import_module", fake_import_module)
    with pytest.raises(errors.MissingDependencyError, match=r"medcurric\[io\]") as info:
        require("nibabel", feature="read_nifti")
    assert isinstance(info.value, ImportError)
    assert "read_nifti" in str(info.value)


class Color(StrEnum):
    RED = "red"
    LIME = "lime"


def test_look_up_option_suggests() -> None:
    assert look_up_option("Red", Color) is Color.RED
    with pytest.raises(errors.InvalidOptionError, match="Did you mean 'lime'"):
        look_up_option("lmie", Color, name="colour")
    with pytest.raises(ValueError, match="one of"):
        look_up_option(3, Color)
