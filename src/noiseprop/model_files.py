"""Loading a user's model: a function that builds a ``torch.nn.Module``, and its weights.

Formats:

* the model, ``spec``: ``PATH.py:FUNCTION`` (a Python file, imported by its path under a module name
  of its own, whose folder is on ``sys.path`` while it is imported and ``FUNCTION`` runs, so it can
  import the files beside it), ``package.module:FUNCTION`` (an importable module), or an alias of
  :data:`MODEL_ALIASES` (``cnn``: the trained CNN shipped with noiseprop; ``cnn-mean``: its twin
  with mean pooling). ``FUNCTION`` is called with
  no arguments and must return an ``nn.Module``; a class that takes no arguments will do.
* the weights: a safetensors file (``safetensors.torch.save_file(model.state_dict(), PATH)``) holding
  the model's ``state_dict``, loaded with ``strict=True`` (every key present, none left over, every
  shape right; dtypes are converted to the model's). Pickle-based files (``torch.save``: ``.pt``,
  ``.pth``, ``.bin``, ``.ckpt``, ``.pkl``) are refused and never opened: unpickling runs code.

Loading a model file runs its code, as ``python FILE.py`` would: load only files you trust.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

from torch import nn

__all__ = ["MODEL_ALIASES", "load_model", "load_weights"]

MODEL_ALIASES = {"cnn": "noiseprop.cnn:default_cnn", "cnn-mean": "noiseprop.cnn:mean_pooling_cnn"}
"""Short names for models shipped with noiseprop, and the spec each stands for."""

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_FORMATS = "PATH.py:FUNCTION, package.module:FUNCTION or " + ", ".join(MODEL_ALIASES)
_CONVERT = "convert it once with safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
_counter = itertools.count()


def load_model(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Build the model of ``spec``, load ``weights`` into it and return it in eval mode.

    Args:
        spec: ``PATH.py:FUNCTION``, ``package.module:FUNCTION`` or ``cnn`` (see the module docstring).
        weights: a safetensors file of the model's ``state_dict``, or ``None`` to keep the weights
            ``FUNCTION`` gave it.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: if the model file or the weights file does not exist.
        ValueError: for a malformed spec, a file that is not ``.py``, a module that fails to import,
            a missing function or one that raises, weights that are not a safetensors file or do not
            fit the model (missing or unexpected keys, shapes).
        TypeError: if the function's result is not an ``nn.Module``.

    Example:
        >>> model = load_model("cnn")
        >>> model.training, [name for name, _ in model.named_children()][:3]
        (False, ['unflatten', 'conv1', 'relu1'])
        >>> load_model("cnn.py")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: model spec must be PATH.py:FUNCTION, ... or cnn, cnn-mean; got 'cnn.py'.
    """
    model = _build(spec)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load the safetensors file ``path`` into ``model`` (``strict=True``); return ``model``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a pickle-based or unreadable file, or tensors that do not fit the model (the
            message lists the missing and unexpected keys and the shapes that differ, a few of each).
    """
    path = Path(path).expanduser()
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ValueError(
            f"weights file {str(path)!r} looks like a torch.save/pickle file ({path.suffix}), which "
            f"noiseprop never opens (unpickling runs code); expected a .safetensors file: {_CONVERT}."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; expected a .safetensors file of the model's "
            "state_dict."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"weights file {str(path)!r} is not a readable safetensors file ({error}); expected the "
            f"model's state_dict saved by safetensors: {_CONVERT}."
        ) from None
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    shapes = [
        f"{key} {tuple(tensors[key].shape)} (model: {tuple(value.shape)})"
        for key, value in expected.items()
        if key in tensors and tensors[key].shape != value.shape
    ]
    problems = [
        f"{label}: {_few(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shapes that differ", shapes),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"weights file {str(path)!r} does not fit the model ({type(model).__name__}); expected "
            f"its state_dict, {len(expected)} tensors; {'; '.join(problems)}."
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights file {str(path)!r} does not fit the model: {error}") from None
    return model


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _build(spec: str) -> nn.Module:
    """The module that the function of ``spec`` returns."""
    if not isinstance(spec, str):
        raise TypeError(f"model spec must be a string ({_FORMATS}); got {type(spec).__name__}.")
    text = MODEL_ALIASES.get(spec.strip(), spec.strip())
    source, colon, name = text.rpartition(":")
    if not colon or not source or not name.isidentifier():
        raise ValueError(f"model spec must be {_FORMATS}; got {spec!r}.")
    path = Path(source).expanduser()
    is_file = path.exists() or source.endswith(".py") or "/" in source or os.sep in source
    if is_file:
        module, where = _import_file(path), f"model file {str(path)!r}"
    else:
        if not all(part.isidentifier() for part in source.split(".")):
            raise ValueError(f"model spec must be {_FORMATS}; got {spec!r}.")
        where = f"module {source!r}"
        try:
            module = importlib.import_module(source)
        except BaseException as error:  # noqa: BLE001 - the user's code may raise anything
            _reraise_interrupt(error)
            raise ValueError(f"could not import {where}: {_describe(error)}.") from None
    function = getattr(module, name, None)
    if function is None:
        raise ValueError(f"{where} has no function {name!r}; it has: {_callables(module)}.")
    if not callable(function):
        raise TypeError(
            f"{where}: {name!r} must be a function that builds the model; got {type(function).__name__}."
        )
    _check_no_arguments(function, f"{source}:{name}")
    with _folder_on_path(path if is_file else None):
        try:
            model = function()
        except BaseException as error:  # noqa: BLE001
            _reraise_interrupt(error)
            raise ValueError(f"model function {source}:{name} raised {_describe(error)}.") from None
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model function {source}:{name} must return a torch.nn.Module; got {type(model).__name__}."
        )
    return model


def _import_file(path: Path) -> ModuleType:
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist; expected a .py file.")
    if not path.is_file() or path.suffix != ".py":
        what = "a folder" if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"
        raise ValueError(
            f"model file {str(path)!r} must be a Python file (.py) that defines the function; got "
            f"{what}."
        )
    stem = "".join(char if char.isalnum() else "_" for char in path.stem)
    name = f"noiseprop_user_model_{next(_counter)}_{stem}"
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise ValueError(f"model file {str(path)!r} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module  # classes and dataclasses defined in the file find their module
    with _folder_on_path(path):
        try:
            found.loader.exec_module(module)
        except BaseException as error:  # noqa: BLE001
            del sys.modules[name]
            _reraise_interrupt(error)
            raise ValueError(
                f"model file {str(path)!r} raised {_describe(error)} while being imported."
            ) from None
    return module


@contextlib.contextmanager
def _folder_on_path(path: Path | None) -> Iterator[None]:
    folder = None if path is None else str(path.resolve().parent)
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def _check_no_arguments(function: Callable[..., object], where: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    required = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"model function {where} must take no arguments (noiseprop calls it as {where}()); it "
            f"requires {', '.join(required)}. Wrap it in a function that fixes them."
        )


def _callables(module: ModuleType) -> str:
    public = {key: value for key, value in vars(module).items() if not key.startswith("_")}
    own = [
        key
        for key, value in public.items()
        if callable(value) and getattr(value, "__module__", None) == module.__name__
    ]
    names = own or [key for key, value in public.items() if callable(value)]
    return ", ".join(sorted(names)) or "no functions"


def _describe(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return type(error).__name__ + (f": {message[0]}" if message else "")


def _reraise_interrupt(error: BaseException) -> None:
    if isinstance(error, KeyboardInterrupt):
        raise error
