"""One API under the CLI: every option of every command sets the API parameter of the same name,
with the same default (issue 18), so `catalog X` and `kc.open(...).X(...)` cannot drift apart."""
from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from kernel_catalog import cli as cli_module
from kernel_catalog._api import Catalog
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.report.figures import KINDS, figure_function

# Options that only shape what the terminal shows (the printed table's format and -o FILE).
PRESENTATION = {"fmt", "output", "force", "help"}
# command path -> the API method it calls (default: the method of the command's name)
METHODS = {"ingest": "ingest_many", "runs delete": "delete_run"}
# params dataclasses whose fields are **keywords of a method
FIELDS = {"embed": EmbedParams, "cluster": ClusterParams}


def _commands(group: click.Group, prefix: str = ""):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path + " ")
            if not command.invoke_without_command:
                continue
        yield path, command


def _api_defaults(path: str) -> dict[str, object]:
    """Parameter -> default (inspect.Parameter.empty when the call must give it) of what `path` calls."""
    if path.startswith("figure "):
        kind = path.split(" ", 1)[1]
        functions = [Catalog.figure, figure_function(kind)]
    else:
        functions = [getattr(Catalog, METHODS.get(path, path))]
    defaults: dict[str, object] = {}
    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name != "self":
                defaults.setdefault(name, parameter.default)
    if path in FIELDS:
        for f in dataclasses.fields(FIELDS[path]):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            defaults.setdefault(f.name, default)
    return defaults


def _cli_default(command: click.Command, param: click.Parameter):
    """What the command passes on when the option is not given (after its type and callback)."""
    ctx = click.Context(command)
    value = param.get_default(ctx)
    if value is None or type(value).__name__ == "Sentinel":   # click >= 8.3: UNSET for "no default"
        value = None
    return param.process_value(ctx, value) if not (param.required and value is None) else None


COMMANDS = list(_commands(cli_module.cli))


def test_every_command_is_walked():
    paths = [path for path, _ in COMMANDS]
    assert {"ingest", "sql", "embed", "cluster", "analyze", "report", "runs", "runs delete", "nearest", "drift",
            "export", "gallery", "verify", "demo"} <= set(paths)
    assert {f"figure {kind}" for kind in KINDS} <= set(paths)


@pytest.mark.parametrize("path,command", COMMANDS, ids=[path for path, _ in COMMANDS])
def test_options_are_api_parameters_with_equal_defaults(path, command):
    api = _api_defaults(path)
    for param in command.params:
        if param.name in PRESENTATION and param.name not in api:
            continue
        assert param.name in api, f"`catalog {path}` option {param.opts} sets no API parameter of that name"
        default = api[param.name]
        if default is inspect.Parameter.empty:       # the API needs it: the CLI asks for it
            continue
        cli_default = _cli_default(command, param)
        if isinstance(cli_default, tuple) and not cli_default and default in ((), None):
            continue                                 # an empty repeatable option is the API's "none"
        assert cli_default == default, (f"`catalog {path}` {param.opts[-1]} defaults to {cli_default!r}, "
                                        f"the API to {default!r}")


def test_one_meaning_per_option_name():
    """An option name is one concept across commands: same API parameter, same type."""
    seen: dict[str, tuple[str, str]] = {}
    for path, command in COMMANDS:
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for opt in param.opts:
                kind = param.name.removesuffix("s") if param.multiple else param.name   # --model, repeatable
                if opt in seen:
                    assert seen[opt][1] == kind, f"{opt}: {kind} in `{path}`, {seen[opt][1]} in `{seen[opt][0]}`"
                else:
                    seen[opt] = (path, kind)
    # the ones people type most, pinned: a run is --run, never an argument
    for path, command in COMMANDS:
        assert not any(isinstance(p, click.Argument) and p.name == "run" for p in command.params), path


def test_the_facade_hides_the_store():
    public = {name for name in dir(Catalog) if not name.startswith("_")}
    assert not public & {"writer", "hold", "snapshot", "data_connection", "refuse_write", "point_at_root"}
    assert not issubclass(Catalog, type(Catalog(".")._store))
