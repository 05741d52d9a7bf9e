"""One-line errors for the typed configs, however they are made.

:func:`format_validation_error` turns a pydantic ``ValidationError`` into the one line a
:class:`~distill.errors.DistillError` carries (the key, the problem, the value). :class:`Checked` is the
base of the typed configs a user may construct directly (the ``TrainConfig`` sections, the split keys,
``ExportConfig``, ``QADConfig``): ``ExportConfig(precisions="fp8")`` raises that line, not a pydantic
dump, and a bool is no number there (YAML's ``true`` and Python's ``True`` would otherwise count as 1).
Validating a mapping (``model_validate``, what the loaders call) raises ``ValidationError`` as before,
for the loader to name its file or ``--set`` item.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import types
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, Union, cast, get_args, get_origin

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from distill.errors import DistillError, UnknownKeyword


def first_error(e: ValidationError) -> Any:
    """The problem of ``e`` to report: an unknown key before any other (a misspelt key is also a missing one: ``out``
    for ``out_dir`` must be named, not ``out_dir``'s absence), else the first."""
    errors = e.errors()
    return next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])


def keys_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """The keys of the (nested) model section ``loc`` names (``("optim",)``: OptimConfig's); [] where unknown."""
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return []
        args = get_args(field.annotation) if get_origin(field.annotation) in (Union, types.UnionType) else ()
        model = next((a for a in (*args, field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def close_key(key: str, keys: Sequence[str], prefix: str = "", listed: Sequence[str] | None = None) -> str:
    """`` (did you mean 'out_dir'?)`` (:func:`difflib.get_close_matches`; ``prefix``: the section's path, ``optim.``),
    else `` (keys: a, b, ...)`` (``listed``, default ``keys``); '' without ``keys``."""
    if not keys:
        return ""
    close = difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else f" (keys: {', '.join(keys if listed is None else listed)})"


F = TypeVar("F", bound=Callable[..., Any])


def checked_keywords(config: str | None = None, elsewhere: Mapping[str, str] | None = None, *,
                     paths: Sequence[str] = (), path_lists: Sequence[str] = ()) -> Callable[[F], F]:
    """A public API function whose unknown keyword argument is one :class:`DistillError` line naming it and the
    closest keyword (``train(overides=...)``: ``train(): unknown keyword argument 'overides' (did you mean
    'overrides'?)``), not Python's bare message: an :class:`~distill.errors.UnknownKeyword`, which is a TypeError
    too. ``config`` (``"module:Type"``, imported on the first unknown keyword): the typed config whose keys a
    function's ``**options`` take (``export``, ``qad``); they are its keywords too. ``elsewhere``: a flag of the
    command that is another function here, keyword -> where it is (``export(format=...)``: ``export_timm``).

    ``paths``: its arguments (or ``**options`` keys) that are paths, and ``path_lists`` those that are a path or a
    list of paths: a value of another type is one line naming the function, the argument and the type got
    (``export: checkpoint must be a path (str or os.PathLike), got int``; :func:`check_paths`), not a TypeError
    from deep inside."""
    def wrap(function: F) -> F:
        name = function.__name__
        signature = inspect.signature(function)
        params = [p.name for p in signature.parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            unknown = [key for key in kwargs if key not in params]
            moved = [key for key in unknown if key in (elsewhere or {})]
            if moved:
                raise UnknownKeyword(f"{name}(): unknown keyword argument '{moved[0]}': {(elsewhere or {})[moved[0]]}")
            if unknown:
                module, _, type_name = (config or "").partition(":")
                try:
                    model = getattr(importlib.import_module(module), type_name) if config else None
                except ImportError:  # (no onnxruntime: the function's own first line says what to install)
                    return function(*args, **kwargs)
                keys = list(model.model_fields) if model is not None else []
                for key in unknown:
                    if key not in keys:
                        hint = close_key(key, [*keys, *params], listed=keys or params) or " (it takes none)"
                        where = f"; its keywords are {type_name}'s keys, not always the flags of distill {name}" \
                            if model is not None else ""
                        raise UnknownKeyword(f"{name}(): unknown keyword argument '{key}'{hint}{where}")
            if paths or path_lists:
                check_paths(name, signature, args, kwargs, paths, path_lists)
            return function(*args, **kwargs)
        return cast(F, checked)
    return wrap


def check_paths(name: str, signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any],
                paths: Sequence[str], path_lists: Sequence[str] = ()) -> None:
    """The path arguments of a call of function ``name`` (:func:`checked_keywords`): each of ``paths`` a str or an
    ``os.PathLike``; each of ``path_lists`` that, or a list or tuple of them (another iterable is taken unchecked: it
    may be read once only). None passes where the argument has a default or is an ``**options`` key (the function or
    its config says what None means); a call that does not bind is left to Python's own error."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return
    given = dict(bound.arguments)
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            given.update(given.pop(param.name, {}))
    for key in (*paths, *path_lists):
        if key not in given:
            continue
        value, declared = given[key], signature.parameters.get(key)
        if value is None and (declared is None or declared.default is not inspect.Parameter.empty):
            continue
        if _is_path(value):
            continue
        if key in path_lists and isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
            bad = [(i, v) for i, v in enumerate(value) if not _is_path(v)] if isinstance(value, (list, tuple)) else []
            if bad:
                raise DistillError(f"{name}: {key}[{bad[0][0]}] must be a path (str or os.PathLike), got "
                                   f"{_type_got(bad[0][1])}")
            continue
        what = "a path or a list of paths" if key in path_lists else "a path"
        raise DistillError(f"{name}: {key} must be {what} (str or os.PathLike), got {_type_got(value)}")


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _type_got(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def format_validation_error(e: ValidationError, source: str, model: type[BaseModel] | None = None,
                            what: str = "key") -> str:
    """The problem of ``e`` (:func:`first_error`) as one line: ``SOURCE: 'key': problem (got value)``; an unknown
    key with the closest key of ``model`` (``SOURCE: unknown key 'optim.epoch' (did you mean 'epochs'?)``), called
    ``what`` (a constructor's: ``keyword argument``)."""
    err = first_error(e)
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        *section, key = [str(p) for p in err["loc"]]
        hint = close_key(key, keys_at(model, section), "".join(f"{p}." for p in section))
        return f"{source}: unknown {what} '{loc}'{hint}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{loc}'"
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):  # a section's cross-key check
        msg = str(err["ctx"]["error"])  # names its keys; the whole section is no value to print
        return f"{source}: {msg}" if not loc or msg.startswith(f"{loc}.") else f"{source}: {loc}: {msg}"
    return f"{source}: '{loc}': {err['msg']} (got {err.get('input')!r})"


def bool_refused(annotation: Any) -> str | None:
    """What a field of this type holds when a bool must not fill it (``int``, ``float``, ``int | None`` ...: pydantic's
    lax mode would take ``True`` as 1): ``"integer"`` or ``"number"``; None for other types (``bool`` among them)."""
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    if bool in args:
        return None
    return "integer" if int in args else "number" if float in args else None


def bool_error(kind: str) -> PydanticCustomError:
    """The error of a bool given where ``kind`` (:func:`bool_refused`) is meant."""
    return PydanticCustomError("bool_is_no_number", "Input should be a valid {kind}, not a bool", {"kind": kind})


class Checked(BaseModel):
    """A typed config whose construction raises a one-line :class:`DistillError` (:meth:`error_line`), and
    whose integer and float fields refuse bools."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise DistillError(type(self).error_line(e)) from None

    # Validating a mapping (model_validate, or this model as a section of another) must not come through here: it
    # raises ValidationError, with the key's whole path, for the loader to name its file or --set item. pydantic calls
    # a model's own __init__ there unless it is marked as its base one (as pydantic-settings' BaseSettings does).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def error_line(cls, e: ValidationError) -> str:
        """The line a bad constructor argument raises (``OptimConfig: 'epochs': ... (got 0)``, ``QADConfig: unknown
        keyword argument 'out' (did you mean 'out_dir'?)``)."""
        return format_validation_error(e, cls.__name__, cls, what="keyword argument")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_int(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            kind = None if field is None else bool_refused(field.annotation)
            if kind is not None:
                raise bool_error(kind)
        return value
