"""The options of a plugin factory, read from the code: names, types, defaults, and their check.

A factory's options are the keyword arguments it accepts:

* a factory with an ``options`` attribute (a tuple of names, as the built-in
  solvers' factories have) accepts exactly those; their types and defaults
  come from the signature of the callable it wraps (``__wrapped__``);
* otherwise the parameters of ``inspect.signature(factory)``: a class's
  ``__init__`` (a dataclass's fields), a function's parameters. A factory
  that takes ``**kwargs`` accepts any option; its named parameters are still
  listed.

:func:`factory_options` is what ``dlngeo plugins`` prints, and
:func:`check_options` is what :func:`dlngeo.plugins.create` runs before calling
the factory, so that a misspelt option gets the same one-line message as a
misspelt name: ``unknown option 'stepp' of solver 'overparametrized_gd'; did
you mean 'step'? (options: step, ...)``.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Option",
    "OptionError",
    "check_options",
    "did_you_mean",
    "factory_options",
    "format_option",
]


def did_you_mean(word: Any, names: Any) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the close matches of ``word`` among ``names``, else ``""``."""
    close = difflib.get_close_matches(str(word), list(names), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class OptionError(ValueError):
    """An unknown or missing option; ``option`` names it, ``str(error)`` is one line."""

    def __init__(self, message: str, option: str, detail: str):
        self.option = option
        #: The message without the option's name, e.g. ``"unknown option of solver 'gd'; ..."``.
        self.detail = detail
        super().__init__(message)


@dataclass(frozen=True)
class Option:
    """One keyword a factory accepts.

    Attributes:
        name: The keyword.
        type: Its annotation as text (``"float"``, ``"int | None"``; ``""`` when not annotated).
        default: The default value (JSON-ready: a non-finite float or an
            object JSON cannot hold is given as its ``repr``); ``None`` when required.
        required: True when the factory has no default for it.
        default_text: The default as Python writes it (``repr``); ``""`` when required.
    """

    name: str
    type: str
    default: Any
    required: bool
    default_text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "required": self.required,
            "default_text": self.default_text,
        }


_MODULE_PREFIX = re.compile(r"\b(?:[A-Za-z_][A-Za-z0-9_]*\.)+([A-Za-z_][A-Za-z0-9_]*)")


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return _MODULE_PREFIX.sub(r"\1", text)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (tuple, list)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return [_jsonable(v) for v in value]
    return repr(value)


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    for eval_str in (True, False):
        try:
            return inspect.signature(factory, eval_str=eval_str)
        except (NameError, TypeError, SyntaxError):  # unresolvable string annotations
            continue
        except ValueError:  # no signature (some builtins)
            return None
    return None


def _parameters(factory: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool]:
    """The keyword parameters of ``factory`` and whether it accepts any keyword (``**kwargs``)."""
    target = getattr(factory, "__wrapped__", factory) if hasattr(factory, "options") else factory
    signature = _signature(target)
    if signature is None:
        return [], True
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    declared = getattr(factory, "options", None)
    if declared is not None:
        by_name = {p.name: p for p in params}
        params = [
            by_name.get(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
            for name in declared
        ]
        open_ended = False
    return params, open_ended


def factory_options(factory: Callable[..., Any]) -> list[Option]:
    """The options ``factory(**options)`` accepts, in signature order, with type and default."""
    params, _ = _parameters(factory)
    return [
        Option(
            name=p.name,
            type=_type_text(p.annotation),
            default=None if p.default is p.empty else _jsonable(p.default),
            required=p.default is p.empty,
            default_text="" if p.default is p.empty else repr(p.default),
        )
        for p in params
    ]


def format_option(option: Option) -> str:
    """``"step: float = 0.01"``; ``"rows: Any (required)"``."""
    head = f"{option.name}: {option.type}" if option.type else option.name
    return f"{head} (required)" if option.required else f"{head} = {option.default_text}"


def check_options(
    kind: str, name: str, factory: Callable[..., Any], options: Mapping[str, Any]
) -> None:
    """Reject options ``factory`` does not accept, and missing required ones, before calling it.

    Raises:
        OptionError: one line naming the option, the close matches and the valid options.
    """
    params, open_ended = _parameters(factory)
    names = [p.name for p in params]
    listing = ", ".join(names) or "none"
    if kind == "solver":  # what [stopping] does by default, from the method's capabilities
        from .dynamics.base import stopping_note

        note = stopping_note(factory)
        listing += f"; under [stopping], by default: {note}" if note else ""
    if not open_ended:
        for option in options:
            if option not in names:
                hint = did_you_mean(option, names)
                detail = f"unknown option of {kind} {name!r}{hint} (options: {listing})"
                raise OptionError(
                    f"unknown option {option!r} of {kind} {name!r}{hint} (options: {listing})",
                    str(option),
                    detail,
                )
    for p in params:
        if p.default is p.empty and p.name not in options:
            detail = f"is required by {kind} {name!r} (options: {listing})"
            raise OptionError(
                f"option {p.name!r} is required by {kind} {name!r} (options: {listing})",
                p.name,
                detail,
            )
