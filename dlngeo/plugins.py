"""The plugin manager: loads plugins, collects what they register, and looks names up.

Plugins are found through the entry-point group ``dlngeo`` (pluggy's
eggsample and devpi pattern). The built-in plugins in ``plugins/`` are
installed as the package ``dlngeo_plugins`` and declared in dlngeo's own
``pyproject.toml``, so they load exactly as a third-party plugin does.

Each hook of :mod:`dlngeo.hookspecs` receives a ``register(name, factory,
description="")`` callback bound to the plugin that implements it, so every
name knows where it came from (the collection is :mod:`dlngeo.registry`).
:func:`available` and :func:`plugin_rows` (the ``dlngeo plugins`` table)
expose that.

Environment, as pytest has it:

* ``DLNGEO_DISABLE_PLUGIN_AUTOLOAD=1``: load only the built-in plugins (the
  entry points of the distribution ``dlngeo``), no third-party ones.
* ``DLNGEO_PLUGINS=mod1,mod2``: extra plugin modules to import by name.
* :func:`load_plugin_module` (the CLI's ``-p module``, the config key
  ``plugins = [...]``) loads one more module for this run.

Faults never stop the other plugins: a plugin that fails to import, or raises
inside its hook, is reported by a one-line :class:`PluginWarning` naming the
plugin and the error. A name registered by two plugins is an error (naming
both) when it is looked up; an unknown name lists the close matches.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .options import check_options, did_you_mean, factory_options
from .registry import (
    KINDS,
    Entry,
    PluginError,
    PluginWarning,
    collect,
    conflict_message,
    error_text,
    plugin_warning,
)

__all__ = [
    "KINDS",
    "Entry",
    "PluginError",
    "PluginWarning",
    "available",
    "create",
    "create_chain",
    "create_data_sampler",
    "create_initialization",
    "create_loss",
    "create_metric",
    "create_sampler",
    "create_solver",
    "get_plugin_manager",
    "load_plugin_module",
    "lookup",
    "plugin_rows",
    "register_plugin",
    "reset_plugins",
    "unregister_plugin",
]

BUILTIN_DISTRIBUTION = "dlngeo"

# --------------------------------------------------------------------- state
_manager: pluggy.PluginManager | None = None
_versions: dict[str, str] = {}  # plugin name -> version
_registry: dict[str, dict[str, list[Entry]]] | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def _distribution_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else ""
    return re.sub(r"[-_.]+", "-", (name or "")).lower()


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    autoload = not _truthy(os.environ.get("DLNGEO_DISABLE_PLUGIN_AUTOLOAD"))
    for ep in sorted(metadata.entry_points(group="dlngeo"), key=lambda e: (e.value, e.name)):
        distribution = _distribution_name(ep)
        if not autoload and distribution != BUILTIN_DISTRIBUTION:
            continue
        plugin_name = ep.value.split(":")[0]
        if pm.has_plugin(plugin_name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            plugin_warning(
                f"dlngeo plugin {plugin_name!r} (entry point {ep.name!r} of {distribution or '?'}) failed to load: {error_text(exc)}"
            )
            continue
        dist = getattr(ep, "dist", None)
        version = dist.version if dist is not None else ""
        _register(pm, plugin, plugin_name, version)


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, version: str) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001 - a malformed plugin is reported, not raised
        plugin_warning(f"dlngeo plugin {name!r} could not be registered: {error_text(exc)}")
        return False
    _versions[name] = version
    return True


def _module_version(module: ModuleType) -> str:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    top = module.__name__.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - stale metadata
            continue
    return ""


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide pluggy manager, with entry points and ``DLNGEO_PLUGINS`` loaded on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager("dlngeo")
        pm.add_hookspecs(hookspecs)
        _manager = pm
        _load_entry_points(pm)
        for name in (os.environ.get("DLNGEO_PLUGINS") or "").split(","):
            if name.strip():
                try:
                    load_plugin_module(name.strip())
                except ValueError as exc:
                    plugin_warning(str(exc))
    return _manager


def reset_plugins() -> None:
    """Forget every loaded plugin; the next lookup reloads them (for tests and notebooks)."""
    global _manager, _registry
    _manager = None
    _registry = None
    _versions.clear()


def load_plugin_module(name: str) -> ModuleType:
    """Import the module ``name`` and register it as a plugin for this process.

    This is the CLI's ``-p module`` and the config key ``plugins = [...]``.
    Loading the same module twice is a no-op.

    Raises:
        ValueError: ``name`` is not a module name or the module cannot be imported.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"plugin module name must be a non-empty string, got {name!r}")
    pm = get_plugin_manager()
    if pm.has_plugin(name):
        return pm.get_plugin(name)  # type: ignore[return-value]
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise ValueError(
            f"plugin module {name!r} could not be imported: {error_text(exc)}"
        ) from None
    if pm.is_registered(module):
        return module
    register_plugin(module, name=name, version=_module_version(module))
    return module


def register_plugin(plugin: Any, name: str | None = None, version: str = "") -> str:
    """Register an in-process plugin object (module, class or instance with ``@hookimpl`` methods).

    Returns:
        The name the plugin is registered under.

    Raises:
        ValueError: the name is taken or the object has malformed hook implementations.
    """
    global _registry
    pm = get_plugin_manager()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    if pm.has_plugin(name):
        raise ValueError(f"plugin name {name!r} is already registered")
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"plugin {name!r} could not be registered: {error_text(exc)}") from None
    _versions[name] = version
    _registry = None
    return name


def unregister_plugin(name: str) -> None:
    """Remove the plugin registered under ``name`` (no-op if there is none)."""
    global _registry
    pm = get_plugin_manager()
    if pm.has_plugin(name):
        pm.unregister(name=name)
    _versions.pop(name, None)
    _registry = None


# ------------------------------------------------------------------ registry
def _get_registry() -> dict[str, dict[str, list[Entry]]]:
    global _registry
    pm = get_plugin_manager()
    if _registry is None:
        _registry = collect(pm, _versions)
    return _registry


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")


def lookup(kind: str, name: str) -> Entry:
    """The :class:`Entry` registered as ``name`` for ``kind``.

    Raises:
        ValueError: unknown kind or name (listing close matches).
        PluginError: two plugins registered ``name``.
    """
    _check_kind(kind)
    entries = _get_registry()[kind]
    if not isinstance(name, str) or name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ValueError(
            f"unknown {kind} {name!r}{did_you_mean(name, entries)} (available: {known})"
        )
    found = entries[name]
    if len(found) > 1:
        raise PluginError(conflict_message(kind, name, found))
    return found[0]


def _described(kind: str, entry: Any) -> str:
    """A solver's description with its default stop (from its capabilities); other kinds as registered."""
    if kind != "solver":
        return entry.description
    from .dynamics.base import stopping_note  # the solvers' layer, needed only here

    note = stopping_note(entry.factory)
    return (
        f"{entry.description}; {note}"
        if note and entry.description
        else (entry.description or note)
    )


def create(kind: str, name: str, **options: Any) -> Any:
    """``factory(**options)`` of ``name``; unknown or missing options first raise
    :class:`~dlngeo.options.OptionError` (one line: close matches, valid options)."""
    entry = lookup(kind, name)
    check_options(kind, name, entry.factory, options)
    return entry.factory(**options)


def create_loss(name: str, **options: Any) -> Any:
    """A :class:`~dlngeo.losses.Loss` by registry name, e.g. ``create_loss("matrix_completion", rows=..., ...)``."""
    return create("loss", name, **options)


def create_metric(name: str, **options: Any) -> Callable[[Any], Any]:
    """A metric ``metric(state) -> float | ndarray`` by registry name."""
    return create("metric", name, **options)


def create_sampler(name: str, **options: Any) -> Any:
    """A sampler of any kind (:mod:`dlngeo.samplers`) by registry name."""
    return create("sampler", name, **options)


def create_initialization(name: str, **options: Any) -> Any:
    """An initialization (``kind "initialization"``: ``sample(rng, network, target=None, loss=None)``)."""
    from .samplers import INITIALIZATION, check_sampler_kind

    return check_sampler_kind(create("sampler", name, **options), INITIALIZATION, name)


def create_data_sampler(name: str, **options: Any) -> Any:
    """A data sampler (``kind "data"``: ``sample(rng)``), e.g. ``low_rank_target``, ``uniform_mask``."""
    from .samplers import DATA, check_sampler_kind

    return check_sampler_kind(create("sampler", name, **options), DATA, name)


def create_chain(name: str, **options: Any) -> Any:
    """A Markov chain (``kind "langevin"``: ``sample(rng, *, loss, start, depth, ...) -> Record``)."""
    from .samplers import CHAIN, check_sampler_kind

    return check_sampler_kind(create("sampler", name, **options), CHAIN, name)


def create_solver(name: str, **options: Any) -> Any:
    """A method (flow, descent, Riemannian solver) by registry name."""
    return create("solver", name, **options)


def available(kind: str) -> dict[str, tuple[str, str]]:
    """Names registered for ``kind`` -> ``(plugin, version)``, sorted by name.

    A name registered by several plugins maps to the plugins joined by ``" | "``.
    """
    _check_kind(kind)
    out = {}
    for name in sorted(_get_registry()[kind]):
        entries = _get_registry()[kind][name]
        out[name] = (" | ".join(e.plugin for e in entries), " | ".join(e.version for e in entries))
    return out


def plugin_rows() -> list[dict[str, Any]]:
    """One row per name: ``kind``, ``name``, ``plugin``, ``version``, ``description``, ``options``.

    ``options``: :func:`dlngeo.options.factory_options` of the factory, as dicts.

    Rows are sorted by kind (loss, metric, sampler, solver) then name. A name
    registered by two plugins gives two rows whose description starts with
    ``CONFLICT``.
    """
    rows = []
    registry = _get_registry()
    for kind in KINDS:
        for name in sorted(registry[kind]):
            entries = registry[kind][name]
            for e in entries:
                note = "CONFLICT: registered by several plugins. " if len(entries) > 1 else ""
                rows.append(
                    {
                        "kind": kind,
                        "name": name,
                        "plugin": e.plugin,
                        "version": e.version,
                        "description": note + _described(kind, e),
                        "options": []  # a problem function takes the config, not options
                        if kind == "problem"
                        else [o.to_dict() for o in factory_options(e.factory)],
                    }
                )
    return rows
