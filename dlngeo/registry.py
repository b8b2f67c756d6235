"""The registry: what the plugins' hooks register, collected into one :class:`Entry` per name.

:func:`collect` calls each hook implementation of each kind on its own, with
a ``register(name, factory, description="")`` callback bound to the plugin,
so that one failing plugin never hides the others (its failure is a one-line
:class:`PluginWarning`) and every name knows where it came from. The plugin
manager, loading and look-ups are :mod:`dlngeo.plugins`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

__all__ = [
    "KINDS",
    "Entry",
    "PluginError",
    "PluginWarning",
    "collect",
    "conflict_message",
    "error_text",
    "plugin_warning",
]

#: Kind of object -> the hook that registers it.
KINDS: dict[str, str] = {
    "loss": "dlngeo_register_losses",
    "metric": "dlngeo_register_metrics",
    "sampler": "dlngeo_register_samplers",
    "solver": "dlngeo_register_solvers",
    "problem": "dlngeo_register_problems",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")


class PluginWarning(UserWarning):
    """A plugin could not be loaded or its hook failed; the others still load."""


class PluginError(ValueError):
    """A name is registered by two plugins (the message names both)."""


@dataclass(frozen=True)
class Entry:
    """One registered name.

    Attributes:
        kind: ``"loss"``, ``"metric"``, ``"sampler"`` or ``"solver"``.
        name: The registry name.
        factory: ``factory(**options)`` builds the object.
        description: One line for ``dlngeo plugins``.
        plugin: The plugin that registered it (its module name).
        version: Version of the distribution providing the plugin (``""`` if unknown).
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    version: str


def plugin_warning(message: str) -> None:
    warnings.warn(" ".join(str(message).split()), PluginWarning, stacklevel=3)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def collect(
    pm: pluggy.PluginManager, versions: dict[str, str]
) -> dict[str, dict[str, list[Entry]]]:
    """Every name each kind's hook registers: ``kind -> name -> [Entry, ...]`` (several: a conflict)."""
    registry: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # Call each implementation on its own: one failing plugin must not hide the others.
        for impl in reversed(hook.get_hookimpls()):
            plugin = impl.plugin_name
            pending: list[Entry] = []

            def register(
                name: str,
                factory: Callable[..., Any],
                description: str = "",
                *,
                _kind=kind,
                _plugin=plugin,
                _pending=pending,
            ) -> None:
                if not isinstance(name, str) or not _NAME.match(name):
                    raise ValueError(
                        f"{_kind} name must be an identifier-like string, got {name!r}"
                    )
                if not callable(factory):
                    raise ValueError(
                        f"{_kind} {name!r}: factory must be callable, got {type(factory).__name__}"
                    )
                summary = (
                    (description or (getattr(factory, "__doc__", None) or "")).strip().splitlines()
                )
                _pending.append(
                    Entry(
                        _kind,
                        name,
                        factory,
                        summary[0].replace("``", "") if summary else "",
                        _plugin,
                        versions.get(_plugin, ""),
                    )
                )

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001 - reported, the other plugins go on
                plugin_warning(f"dlngeo plugin {plugin!r} failed in {hook_name}: {error_text(exc)}")
                continue
            for entry in pending:
                registry[kind].setdefault(entry.name, []).append(entry)
    return registry


def conflict_message(kind: str, name: str, entries: list[Entry]) -> str:
    who = " and ".join(f"{e.plugin!r} ({e.version or 'unknown version'})" for e in entries)
    return f"{kind} {name!r} is registered by more than one plugin: {who}; uninstall or disable one of them"
