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

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from distill.errors import DistillError


def format_validation_error(e: ValidationError, source: str) -> str:
    """The first problem of ``e`` as one line: ``SOURCE: 'key': problem (got value)``."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
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
        """The line a bad constructor argument raises (``OptimConfig: 'epochs': ... (got 0)``)."""
        return format_validation_error(e, cls.__name__)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_int(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            kind = None if field is None else bool_refused(field.annotation)
            if kind is not None:
                raise bool_error(kind)
        return value
