"""Errors raised for bad user input, and their one-line form (docs/design.md, "Reliability")."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """Bad user input: one clear line naming the value and what is allowed (docs/design.md, "Reliability")."""


_PARSER_KEY = re.compile(r'^(?P<indent>\s*)Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)$')
_CLASS_PATH = re.compile(r"^(?P<indent>\s*)- Problem with given class_path '(?P<path>[^']+)':")
_NOT_ACCEPTED = re.compile(
    r"Option '(?P<key>[^']+)' is not accepted|Key \"?'?(?P<key2>[\w.]+)'?\"? is not expected"
)
_STRUCTURE = ("Does not validate", "Subtypes:", "Errors:", "Expected a <class 'NoneType'>", "Given value")


def _import(path: str) -> type | None:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def accepted_keys(path: str) -> list[str]:
    """The options a class takes in a config: dataclass fields, or `__init__` parameters along `**kwargs`."""
    cls = _import(path)
    if cls is None:
        return []
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [
            p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _init_args(class_path: str | None) -> str:
    """`init_args.` where a key sits under a subclass-mode class (`data: {class_path, init_args}`)."""
    cls = _import(class_path) if class_path else None
    return "" if cls is None or dataclasses.is_dataclass(cls) else "init_args."


def parse_error_line(message: str) -> str:
    """One line from a jsonargparse error: the bad key with the allowed ones, or the innermost problem."""
    lines = message.strip().splitlines()
    if len(lines) == 1:
        match = _PARSER_KEY.match(lines[0])
        return f"{match['key']}: {match['rest']}" if match else lines[0]
    keys: list[str] = []
    class_path = None
    given = None
    leaf: list[str] = []
    for line in lines:  # the first branch of each Union is the class (the others say "Expected a NoneType")
        text = line.strip().removeprefix("- ")
        if match := _PARSER_KEY.match(line):
            keys.append(f"{_init_args(class_path)}{match['key']}" if keys else match["key"])
            if match["rest"]:
                leaf.append(match["rest"])
        elif match := _CLASS_PATH.match(line):
            class_path = match["path"]
        elif text.startswith("Given value:") and given is None:
            given = text.removeprefix("Given value:").strip()
        elif text and not text.startswith(_STRUCTURE):
            leaf.append(text)
    key = ".".join(keys)
    for text in leaf:
        if match := _NOT_ACCEPTED.search(text):
            bad = match["key"] or match["key2"]
            allowed = accepted_keys(class_path) if class_path else []
            shown = f"{key}.{_init_args(class_path)}{bad}" if key else bad
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            return f"unknown key {shown!r}{hint}"
    problem = "; ".join(leaf) or "invalid value"
    value = f" = {given}" if given is not None and "NestedArg" not in given else ""
    return f"{key}{value}: {problem}" if key else problem


def check_yaml_files(argv: list[str]) -> None:
    """Raise ConfigError naming the file and line of the first `--config` file that is not valid YAML."""
    paths = [b for a, b in zip(argv, argv[1:]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{where}: invalid YAML: {problem}") from error
