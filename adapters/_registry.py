"""The adapter registry: plugins found through the `kernel_catalog.adapters` entry-point group.

Built-in adapters are registered the same way (in pyproject.toml), so the plugin path is the one
the core itself uses. `KERNEL_CATALOG_PLUGINS=a,b` limits loading to the named adapters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from kernel_catalog.errors import CatalogError

from kernel_catalog.adapters.base import Adapter, Expander, IngestOptions

GROUP = "kernel_catalog.adapters"
PLUGINS_ENV = "KERNEL_CATALOG_PLUGINS"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    version: str
    package: str
    description: str
    priority: int


_adapters: dict[str, tuple[Adapter, str]] | None = None   # name -> (adapter, package)
_broken: dict[str, str] = {}   # name -> why it failed to load (shown by `catalog adapters`)


def _load() -> dict[str, tuple[Adapter, str]]:
    global _adapters
    if _adapters is None:
        wanted = {n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()}
        loaded = {}
        for entry_point in entry_points(group=GROUP):
            if wanted and entry_point.name not in wanted:
                continue
            try:
                adapter = entry_point.load()()
            except Exception as error:   # a broken plugin must not take the others down
                _broken[entry_point.name] = f"{type(error).__name__}: {error}"
                continue
            package = entry_point.dist.name if entry_point.dist else "?"
            loaded[entry_point.name] = (adapter, package)
        _adapters = loaded
    return _adapters


def register(adapter: Adapter, package: str = "<runtime>") -> None:
    """Register an adapter object directly (notebooks, tests); entry points are the normal way."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"{adapter!r} does not implement the Adapter protocol")
    _load()[adapter.name] = (adapter, package)


def reset() -> None:
    """Forget loaded adapters so entry points are read again (after installing a plugin)."""
    global _adapters
    _adapters = None
    _broken.clear()


def list_adapters() -> list[AdapterInfo]:
    return sorted(
        (AdapterInfo(name, a.version, package, a.description, a.priority)
         for name, (a, package) in _load().items()),
        key=lambda info: (-info.priority, info.name),
    )


def adapters_table() -> list[dict]:
    """`catalog adapters`: every installed adapter, then every entry point that failed to load."""
    rows = [{"adapter": i.name, "version": i.version, "package": i.package, "priority": i.priority,
             "description": i.description} for i in list_adapters()]
    rows += [{"adapter": name, "version": None, "package": None, "priority": None,
              "description": f"failed to load: {why}"} for name, why in broken_adapters().items()]
    return rows


def broken_adapters() -> dict[str, str]:
    """Entry points that failed to load, with the reason."""
    _load()
    return dict(_broken)


def get_adapter(name: str) -> Adapter:
    adapters = _load()
    if name not in adapters:
        known = ", ".join(sorted(adapters)) or "none"
        raise CatalogError(f"unknown adapter '{name}' (installed: {known}); see `catalog adapters`")
    return adapters[name][0]


def find_adapter(source: str, options: IngestOptions) -> Adapter:
    """The highest-priority adapter that says it can read `source`."""
    for info in list_adapters():
        adapter = get_adapter(info.name)
        if adapter.can_read(source, options):
            return adapter
    if os.path.sep in source or os.path.splitext(source)[1]:
        if not os.path.exists(source):
            raise CatalogError(f"{source}: no such file; check the path")
        raise CatalogError(
            f"{source}: no adapter reads this kind of file; see `catalog adapters`, or pass --adapter NAME"
        )
    raise CatalogError(
        f"'{source}': not a file and no adapter knows this name; see `catalog adapters`"
    )


def expand_pattern(pattern: str, options: IngestOptions) -> list[str]:
    """Expand an fnmatch pattern through the adapters that can (the optional `Expander.expand`)."""
    for info in list_adapters():
        adapter = get_adapter(info.name)
        if isinstance(adapter, Expander):
            names = adapter.expand(pattern, options)
            if names:
                return names
    raise CatalogError(f"pattern '{pattern}' matches no model name; see `catalog adapters`")
