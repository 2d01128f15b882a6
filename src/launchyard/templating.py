"""Queue config templates: parse first, then substitute into the tree.

A queue stores a config template (YAML or JSON text) and the variables it
declares; a run supplies values. The steps, in this order:

1. ``parse_config`` turns the text into a tree *before* anything is substituted.
2. ``parse_variables`` checks the declarations; ``check_template`` checks that
   every ``${macro}`` is known and every ``{{ variable }}`` is declared.
3. ``resolve_values`` fills defaults and checks each value against its schema.
4. ``render`` walks the tree and substitutes inside string values only.

Because substitution happens on the parsed tree, never on text, a value cannot
inject structure: ``"a\\nb: c"`` stays one string, a value that looks like
``{{other}}`` is not expanded again, and keys are never touched. A string that is
exactly one placeholder becomes the typed value (``'{{gpus}}'`` -> ``2``); a
placeholder inside a longer string is formatted into it (``"gpu:{{gpus}}"`` ->
``"gpu:2"``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from launchyard.errors import (
    ConfigSyntaxError,
    TemplateError,
    VariableSchemaError,
    VariableValueError,
)

KNOWN_MACROS: tuple[str, ...] = (
    "image_uri",
    "project_name",
    "entity_name",
    "run_id",
    "run_name",
    "queue_name",
    "author",
)
VARIABLE_TYPES: tuple[str, ...] = ("string", "integer", "number")
SCHEMA_KEYS: tuple[str, ...] = ("type", "default", "minimum", "maximum", "enum", "description")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(_NAME)
# Both kinds in one pattern: a single re.sub pass per string does every substitution,
# so text that a value brings in is never scanned for placeholders again.
_PLACEHOLDER_RE = re.compile(
    r"\{\{\s*(?P<var>" + _NAME + r")\s*\}\}|\$\{(?P<macro>" + _NAME + r")\}"
)
_INTEGER_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_TYPE_ALIASES = {"int": "integer", "float": "number", "double": "number", "str": "string"}
_RULE_ORDER = ("type", "enum", "minimum", "maximum")  # report the most basic problem first
# The server parses configs from users: YAML aliases (*a) can expand a few lines into
# a huge (or self-referencing) tree, so bound what later steps will walk.
_MAX_NODES = 100_000
_MAX_DEPTH = 100
_KINDS = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer"}
_TYPES = Draft202012Validator.TYPE_CHECKER  # one notion of "integer" for enum and values


@dataclass(frozen=True)
class Placeholders:
    """Names used in a config tree, sorted and unique."""

    variables: tuple[str, ...] = ()
    macros: tuple[str, ...] = ()


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), "number" if isinstance(value, float) else type(value).__name__)


def _a(value: Any) -> str:
    kind = _kind(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _closest(word: str, options: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(options), n=1)
    return matches[0] if matches else None


# --- parsing ---------------------------------------------------------------------------


def parse_config(text: str, *, source: str = "config") -> dict[str, Any]:
    """Parse YAML or JSON text into a mapping; ConfigSyntaxError names line and column."""
    stripped = text.strip()
    if not stripped:
        return {}
    try:
        tree = _load_json(text, source) if stripped[0] in "{[" else _load_yaml(text, source)
    except RecursionError:
        raise ConfigSyntaxError(
            f"{source}: nested too deeply", fields={"source": source, "rule": "depth"}
        ) from None
    if tree is None:  # only comments, or a bare "null"
        return {}
    if not isinstance(tree, dict):
        raise ConfigSyntaxError(
            f"{source} must be a mapping (key: value), got {_a(tree)}",
            fields={"source": source, "rule": "mapping", "got": _kind(tree)},
        )
    _check_size(tree, source)
    return tree


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _syntax_error(source, exc.lineno, exc.colno, exc.msg) from None


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise ConfigSyntaxError(f"{source}: {problem}", fields={"source": source}) from None
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        # PyYAML's own words ("found character '\t' that cannot start any token") do not
        # say that the fix is to indent with spaces.
        if "\t" in indent and mark.column <= len(indent):
            problem = "a tab character is used for indentation; YAML indents with spaces only"
        elif "'\\t'" in problem:
            problem = "a tab character is not allowed here; use spaces"
        raise _syntax_error(source, mark.line + 1, mark.column + 1, problem) from None
    except yaml.YAMLError as exc:  # e.g. a control character: no line/column mark
        raise ConfigSyntaxError(
            f"{source}: {str(exc).splitlines()[0]}", fields={"source": source}
        ) from None


def _syntax_error(source: str, line: int, column: int, problem: str) -> ConfigSyntaxError:
    return ConfigSyntaxError(
        f"{source}: line {line}, column {column}: {problem}",
        fields={"source": source, "line": line, "column": column, "problem": problem},
    )


def _check_size(tree: Any, source: str) -> None:
    stack: list[tuple[Any, int]] = [(tree, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > _MAX_NODES or depth > _MAX_DEPTH:
            raise ConfigSyntaxError(
                f"{source}: too large once expanded (over {_MAX_NODES} values or "
                f"{_MAX_DEPTH} levels deep); check YAML aliases (*name)",
                fields={"source": source, "rule": "size", "limit": _MAX_NODES},
            )
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


# --- variable declarations -------------------------------------------------------------


def parse_variables(raw: Any) -> dict[str, dict[str, Any]]:
    """Check declarations; return {name: {"description": str | None, "schema": {...}}}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise VariableSchemaError(
            f"variables must be a mapping of name -> {{description, schema}}, got {_a(raw)}",
            fields={"rule": "mapping"},
        )
    return {_check_name(name): _parse_declaration(name, decl) for name, decl in raw.items()}


def _check_name(name: Any) -> str:
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return name
    fix = re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "my_variable"
    fix = "_" + fix if fix[0].isdigit() else fix
    raise VariableSchemaError(
        f"variable name {name!r} is not valid; use letters, digits and _, "
        f"not starting with a digit (e.g. {fix})",
        fields={"variable": name, "rule": "name"},
    )


def _schema_error(name: str, problem: str, rule: str, **extra: Any) -> VariableSchemaError:
    return VariableSchemaError(
        f"variable {name!r}: {problem}", fields={"variable": name, "rule": rule, **extra}
    )


def _parse_declaration(name: str, decl: Any) -> dict[str, Any]:
    if isinstance(decl, dict) and "schema" not in decl and "type" in decl:
        decl = {"schema": decl}  # short form: the value is the schema itself
    if not isinstance(decl, dict) or not isinstance(decl.get("schema"), dict):
        raise _schema_error(name, "needs a schema, e.g. {schema: {type: integer}}", "schema")
    for key in decl:
        if key not in ("description", "schema"):
            raise _schema_error(
                name, f"unknown key {key!r}; allowed: description, schema", "unknown_key", key=key
            )
    schema = {k: v for k, v in decl["schema"].items() if k != "description"}
    description = decl.get("description", decl["schema"].get("description"))
    if description is not None and not isinstance(description, str):
        raise _schema_error(name, "description must be a string", "description")
    _check_schema(name, schema)
    return {"description": description, "schema": schema}


def _check_schema(name: str, schema: dict[str, Any]) -> None:
    for key in schema:
        if key not in SCHEMA_KEYS:
            close = _closest(str(key), SCHEMA_KEYS)
            hint = f" (did you mean {close!r}?)" if close else ""
            allowed = ", ".join(SCHEMA_KEYS)
            raise _schema_error(
                name,
                f"unknown schema key {key!r}; allowed: {allowed}{hint}",
                "unknown_key",
                key=key,
            )
    types = ", ".join(VARIABLE_TYPES)
    vtype = schema.get("type")
    if vtype is None:
        raise _schema_error(name, f"schema needs a type, one of {types}", "type")
    if not isinstance(vtype, str) or vtype not in VARIABLE_TYPES:
        close = _TYPE_ALIASES.get(str(vtype)) or _closest(str(vtype), VARIABLE_TYPES)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise _schema_error(
            name, f"type {vtype!r} is not supported; use one of {types}{hint}", "type"
        )
    for bound in ("minimum", "maximum"):
        if bound in schema and vtype == "string":
            raise _schema_error(
                name, f"{bound} applies only to integer and number, not string", bound
            )
        if bound in schema and not _TYPES.is_type(schema[bound], "number"):
            raise _schema_error(name, f"{bound} must be a number, got {schema[bound]!r}", bound)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None and low > high:
        raise _schema_error(name, f"minimum {low} is greater than maximum {high}", "minimum")
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            raise _schema_error(name, "enum must be a non-empty list of allowed values", "enum")
        for item in enum:
            if not _TYPES.is_type(item, vtype):
                raise _schema_error(name, f"enum item {item!r} is not of type {vtype}", "enum")
    if "default" in schema:
        problem = _value_problem(name, schema, schema["default"])
        if problem is not None:
            text, fields = problem
            raise VariableSchemaError(
                f"variable {name!r}: default {text}", fields={**fields, "key": "default"}
            )


# --- values ----------------------------------------------------------------------------


def _value_problem(
    name: str, schema: dict[str, Any], value: Any
) -> tuple[str, dict[str, Any]] | None:
    """Validate with jsonschema, then say what is wrong in our own words (or None)."""
    validator = Draft202012Validator({k: v for k, v in schema.items() if k != "description"})
    errors = list(validator.iter_errors(value))
    if not errors:
        return None
    rank = {rule: i for i, rule in enumerate(_RULE_ORDER)}
    error = min(errors, key=lambda e: rank.get(str(e.validator), len(rank)))
    rule = str(error.validator)
    fields: dict[str, Any] = {"variable": name, "value": value, "rule": rule}
    if rule == "type":
        fields["expected"] = schema["type"]
        return f"{value!r} is not of type {schema['type']}", fields
    if rule == "enum":
        fields["allowed"] = list(schema["enum"])
        return f"{value!r} is not one of {', '.join(map(repr, schema['enum']))}", fields
    if rule in ("minimum", "maximum"):
        fields["limit"] = schema[rule]
        side = "above" if rule == "maximum" else "below"
        text = f"{value!r} is {side} the {rule} {schema[rule]}"
        if "minimum" in schema and "maximum" in schema:
            text += f" (allowed {schema['minimum']}–{schema['maximum']})"
        return text, fields
    return str(error.message), fields


def coerce_value(name: str, schema: dict[str, Any], raw: str) -> Any:
    """Turn a CLI ``--set name=raw`` string into the declared type (bounds come later)."""
    vtype = schema.get("type", "string")
    if vtype == "string":
        return raw
    text = raw.strip()
    try:
        if _INTEGER_RE.fullmatch(text) and vtype in ("integer", "number"):
            return int(text)
        if _NUMBER_RE.fullmatch(text) and vtype == "number" and math.isfinite(float(text)):
            return float(text)
    except ValueError:  # e.g. more digits than int() accepts
        pass
    raise VariableValueError(
        f"variable {name!r}: {raw!r} is not {'an integer' if vtype == 'integer' else 'a number'}",
        fields={"variable": name, "value": raw, "rule": "type", "expected": vtype},
    )


def resolve_values(
    variables: dict[str, dict[str, Any]], values: dict[str, Any], *, queue: str = ""
) -> dict[str, Any]:
    """Check a run's values against the declarations, fill defaults; return all values."""
    for key in values:
        if key not in variables:
            where = f" for queue {queue!r}" if queue else ""
            close = _closest(str(key), variables)
            hint = f" (did you mean {close!r}?)" if close else ""
            declared = ", ".join(variables) or "none"
            raise VariableValueError(
                f"unknown variable {key!r}{where}; declared: {declared}{hint}",
                fields={"variable": key, "queue": queue, "rule": "declared"},
            )
    resolved: dict[str, Any] = {}
    for name, declaration in variables.items():
        schema = declaration["schema"]
        if name in values:
            value = values[name]
        elif "default" in schema:
            value = schema["default"]
        else:
            raise VariableValueError(
                f"variable {name!r} is required (no default); pass --set {name}=VALUE",
                fields={"variable": name, "rule": "required"},
            )
        problem = _value_problem(name, schema, value)
        if problem is not None:
            raise VariableValueError(f"variable {name!r}: {problem[0]}", fields=problem[1])
        if schema.get("type") == "integer" and isinstance(value, float):
            value = int(value)  # JSON's 2.0 is a valid integer; keep it 2 in the config
        resolved[name] = value
    return resolved


# --- placeholders and rendering --------------------------------------------------------


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):  # keys are literal: only values are searched
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _strings(item)


def find_placeholders(tree: Any) -> Placeholders:
    variables: set[str] = set()
    macros: set[str] = set()
    for text in _strings(tree):
        for match in _PLACEHOLDER_RE.finditer(text):
            if match["var"] is not None:
                variables.add(match["var"])
            else:
                macros.add(match["macro"])
    return Placeholders(variables=tuple(sorted(variables)), macros=tuple(sorted(macros)))


def check_template(tree: Any, variables: dict[str, dict[str, Any]]) -> Placeholders:
    """Refuse unknown macros and undeclared variables; return what the tree uses."""
    found = find_placeholders(tree)
    for macro in found.macros:
        if macro not in KNOWN_MACROS:
            known = ", ".join(f"${{{m}}}" for m in KNOWN_MACROS)
            close = _closest(macro, KNOWN_MACROS)
            hint = f" (did you mean ${{{close}}}?)" if close else ""
            raise TemplateError(
                f"unknown macro ${{{macro}}}; known macros: {known}{hint}",
                fields={"macro": macro, "known": list(KNOWN_MACROS), "rule": "unknown_macro"},
            )
    for name in found.variables:
        if name not in variables:
            close = _closest(name, variables)
            hint = f"; did you mean {{{{{close}}}}}?" if close else ""
            raise TemplateError(
                f"config uses {{{{{name}}}}} but it is not declared; declare it under variables "
                f"(declared: {', '.join(variables) or 'none'}){hint}",
                fields={"variable": name, "declared": list(variables), "rule": "undeclared"},
            )
    return found


def _lookup(match: re.Match[str], values: dict[str, Any], macros: dict[str, Any]) -> Any:
    if match["var"] is not None:
        name, shown, value = match["var"], "{{" + match["var"] + "}}", values.get(match["var"])
        missing = f"variable {shown} has no value; pass --set {name}=VALUE"
    else:
        name, shown, value = match["macro"], "${" + match["macro"] + "}", macros.get(match["macro"])
        missing = f"macro {shown} has no value for this run"
    if value is None:  # never write the text "None" into a config
        raise TemplateError(missing, fields={"placeholder": shown, "rule": "missing_value"})
    if not isinstance(value, str | int | float):  # a value must not bring structure in
        raise TemplateError(
            f"{shown}: value must be a string or a number, got {_a(value)}",
            fields={"placeholder": shown, "rule": "type"},
        )
    return value


def render(tree: Any, values: dict[str, Any], macros: dict[str, Any]) -> Any:
    """Return a new tree with placeholders in string values replaced; the input is untouched."""
    if isinstance(tree, dict):
        return {key: render(value, values, macros) for key, value in tree.items()}
    if isinstance(tree, list):
        return [render(item, values, macros) for item in tree]
    if not isinstance(tree, str):
        return tree
    whole = _PLACEHOLDER_RE.fullmatch(tree)
    if whole is not None:  # exactly one placeholder: keep the value's type ('{{gpus}}' -> 2)
        return _lookup(whole, values, macros)
    return _PLACEHOLDER_RE.sub(lambda m: str(_lookup(m, values, macros)), tree)


def render_config(
    text: str, variables_raw: Any, values: dict[str, Any], macros: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse, check and render in one call; return (rendered tree, resolved values)."""
    tree = parse_config(text)
    variables = parse_variables(variables_raw)
    check_template(tree, variables)
    resolved = resolve_values(variables, values)
    rendered: dict[str, Any] = render(tree, resolved, macros)
    return rendered, resolved
