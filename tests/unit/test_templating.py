"""Unit tests for launchyard.templating: parse, validate, substitute into the tree."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from launchyard.errors import (
    ConfigSyntaxError,
    InvalidInputError,
    TemplateError,
    VariableSchemaError,
    VariableValueError,
)
from launchyard.templating import (
    KNOWN_MACROS,
    VARIABLE_TYPES,
    Placeholders,
    check_template,
    coerce_value,
    find_placeholders,
    parse_config,
    parse_variables,
    render,
    render_config,
    resolve_values,
)

JOB_YAML = """\
spec:
  template:
    spec:
      containers:
        - image: ${image_uri}
          resources:
            limits: {cpu: 4, memory: 12Gi, nvidia.com/gpu: '{{gpus}}'}
      restartPolicy: Never
  backoffLimit: 0
"""

JOB_JSON = """\
{
  "spec": {
    "template": {
      "spec": {
        "containers": [
          {
            "image": "${image_uri}",
            "resources": {
              "limits": {"cpu": 4, "memory": "12Gi", "nvidia.com/gpu": "{{gpus}}"}
            }
          }
        ],
        "restartPolicy": "Never"
      }
    },
    "backoffLimit": 0
  }
}
"""

NFS_YAML = """\
spec:
  template:
    spec:
      containers:
        - image: ${image_uri}
          resources:
            limits: {cpu: 4, memory: 12Gi, nvidia.com/gpu: '{{gpus}}'}
          volumeMounts: [{name: nfs-storage, mountPath: /root/.cache}]
      volumes: [{name: nfs-storage, persistentVolumeClaim: {claimName: nfs-pvc}}]
      restartPolicy: Never
  backoffLimit: 0
"""

NFS_JSON = json.dumps(yaml.safe_load(NFS_YAML), indent=2)

GPUS = {"description": "GPUs per pod", "schema": {"type": "integer", "default": 1, "maximum": 4}}
MACROS = {"image_uri": "registry.local/train:abc123", "run_id": "r-42", "author": "ana"}


def expected_job(gpus: Any, image: str = "registry.local/train:abc123") -> dict[str, Any]:
    return {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": image,
                            "resources": {
                                "limits": {"cpu": 4, "memory": "12Gi", "nvidia.com/gpu": gpus}
                            },
                        }
                    ],
                    "restartPolicy": "Never",
                }
            },
            "backoffLimit": 0,
        }
    }


def raises(cls: type[Exception], fn: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(cls) as info:
        fn(*args, **kwargs)
    return info.value


# --- example configs ---------------------------------------------------------------------


@pytest.mark.parametrize("text", [JOB_YAML, JOB_JSON], ids=["yaml", "json"])
def test_job_example_renders_gpus_typed(text: str) -> None:
    rendered, resolved = render_config(text, {"gpus": GPUS}, {"gpus": 2}, MACROS)
    assert rendered == expected_job(2)
    assert resolved == {"gpus": 2}
    limits = rendered["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert type(limits["nvidia.com/gpu"]) is int


@pytest.mark.parametrize("text", [JOB_YAML, JOB_JSON], ids=["yaml", "json"])
def test_job_example_uses_default(text: str) -> None:
    rendered, resolved = render_config(text, {"gpus": GPUS}, {}, MACROS)
    assert rendered == expected_job(1)
    assert resolved == {"gpus": 1}


def test_yaml_and_json_parse_to_the_same_tree() -> None:
    assert parse_config(JOB_YAML) == parse_config(JOB_JSON)
    assert parse_config(NFS_YAML) == parse_config(NFS_JSON)


@pytest.mark.parametrize("text", [NFS_YAML, NFS_JSON], ids=["yaml", "json"])
def test_nfs_variant(text: str) -> None:
    rendered, _ = render_config(text, {"gpus": GPUS}, {"gpus": 3}, MACROS)
    pod = rendered["spec"]["template"]["spec"]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "nfs-storage", "mountPath": "/root/.cache"}
    ]
    assert pod["volumes"] == [
        {"name": "nfs-storage", "persistentVolumeClaim": {"claimName": "nfs-pvc"}}
    ]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 3
    assert pod["containers"][0]["image"] == MACROS["image_uri"]


def test_render_config_refuses_before_rendering() -> None:
    with pytest.raises(VariableValueError):
        render_config(JOB_YAML, {"gpus": GPUS}, {"gpus": 9}, MACROS)
    with pytest.raises(TemplateError, match="not declared"):
        render_config(JOB_YAML, None, {}, MACROS)
    with pytest.raises(ConfigSyntaxError):
        render_config("a: [1", None, {}, MACROS)
    with pytest.raises(VariableSchemaError):
        render_config(JOB_YAML, {"gpus": {"schema": {"type": "int"}}}, {}, MACROS)


def test_constants() -> None:
    assert KNOWN_MACROS == (
        "image_uri",
        "project_name",
        "entity_name",
        "run_id",
        "run_name",
        "queue_name",
        "author",
    )
    assert VARIABLE_TYPES == ("string", "integer", "number")


def test_errors_are_invalid_input() -> None:
    for cls in (ConfigSyntaxError, TemplateError, VariableSchemaError, VariableValueError):
        assert issubclass(cls, InvalidInputError)
        assert cls("x").status_code == 422


# --- parse_config ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n", "null", "~"])
def test_empty_config_is_empty_mapping(text: str) -> None:
    assert parse_config(text) == {}


def test_json_with_leading_whitespace() -> None:
    assert parse_config('\n  {"a": 1}\n') == {"a": 1}


def test_yaml_scalars_keep_their_types() -> None:
    tree = parse_config("a: 1\nb: 1.5\nc: true\nd: null\ne: '1'\nf: [1, x]\n")
    assert tree == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "1", "f": [1, "x"]}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- a\n- b\n", "a list"),
        ("[1, 2]", "a list"),
        ("just text", "a string"),
        ("42", "an integer"),
        ("4.5", "a number"),
        ("true", "a boolean"),
    ],
)
def test_top_level_must_be_mapping(text: str, kind: str) -> None:
    err = raises(ConfigSyntaxError, parse_config, text)
    assert err.message == f"config must be a mapping (key: value), got {kind}"
    assert err.fields["rule"] == "mapping"


def test_top_level_list_message_exact() -> None:
    err = raises(ConfigSyntaxError, parse_config, "- a\n")
    assert str(err) == "config must be a mapping (key: value), got a list"


def test_source_names_the_thing() -> None:
    err = raises(ConfigSyntaxError, parse_config, "- a\n", source="job.yaml")
    assert err.message.startswith("job.yaml must be a mapping")
    err = raises(ConfigSyntaxError, parse_config, "a: [1\n", source="job.yaml")
    assert err.message.startswith("job.yaml: line ")
    assert err.fields["source"] == "job.yaml"


def test_tab_indentation_message() -> None:
    text = "spec:\n  a: 1\n\tb: 2\n"
    err = raises(ConfigSyntaxError, parse_config, text)
    assert err.message == (
        "config: line 3, column 1: a tab character is used for indentation; "
        "YAML indents with spaces only"
    )
    assert err.fields["line"] == 3
    assert err.fields["column"] == 1
    assert "\n" not in err.message


def test_tab_after_spaces_in_indentation() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a:\n  b: 1\n \tc: 2\n")
    assert "tab" in err.message
    assert err.fields["line"] == 3


def test_tab_not_in_indentation() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: 1\t# comment\n")
    assert (
        err.message == "config: line 1, column 5: a tab character is not allowed here; use spaces"
    )


def test_malformed_yaml_line_and_column() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: 1\n  b: 2\n")
    assert err.message == "config: line 2, column 4: mapping values are not allowed here"
    assert err.fields == {
        "source": "config",
        "line": 2,
        "column": 4,
        "problem": "mapping values are not allowed here",
    }


def test_malformed_yaml_flow_sequence() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: [1, 2\nb: 3\n")
    assert err.message.startswith("config: line 2, column 2: expected ',' or ']'")
    assert "\n" not in err.message


def test_malformed_yaml_unclosed_quote() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: 'x\n")
    assert err.fields["line"] == 2
    assert "end of stream" in err.message


def test_yaml_list_item_after_mapping() -> None:
    err = raises(ConfigSyntaxError, parse_config, "key: value\n- item\n")
    assert err.message.startswith("config: line 2, column 1: expected <block end>")


def test_yaml_python_tags_refused() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: !!python/object/apply:os.system ['ls']\n")
    assert err.fields["line"] == 1
    assert "constructor" in err.message


def test_yaml_control_character_refused() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: \x01\n")
    assert err.message.startswith("config: unacceptable character")


def test_yaml_multiple_documents_refused() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: 1\n---\nb: 2\n")
    assert err.fields["line"] == 2


def test_malformed_json_line_and_column() -> None:
    err = raises(ConfigSyntaxError, parse_config, '{"a": 1,\n  "b" 2}')
    assert err.message == "config: line 2, column 7: Expecting ':' delimiter"
    assert err.fields["line"] == 2
    assert err.fields["column"] == 7


def test_json_trailing_comma() -> None:
    err = raises(ConfigSyntaxError, parse_config, '{\n  "a": 1,\n}\n')
    assert err.fields["line"] == 3
    assert err.fields["column"] == 1


def test_json_list_top_level() -> None:
    err = raises(ConfigSyntaxError, parse_config, "[]")
    assert "got a list" in err.message


def test_yaml_alias_bomb_refused() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 7):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    err = raises(ConfigSyntaxError, parse_config, "\n".join(lines) + "\n")
    assert "too large" in err.message
    assert err.fields["rule"] == "size"


def test_self_referencing_yaml_refused() -> None:
    err = raises(ConfigSyntaxError, parse_config, "a: &a [*a]\n")
    assert err.fields["rule"] == "size"


def test_deep_json_refused() -> None:
    err = raises(ConfigSyntaxError, parse_config, '{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    assert err.fields["rule"] in ("depth", "size")


def test_small_alias_allowed() -> None:
    tree = parse_config("base: &b {cpu: 4}\nother: *b\n")
    assert tree == {"base": {"cpu": 4}, "other": {"cpu": 4}}


# --- parse_variables ---------------------------------------------------------------------


def test_parse_variables_none_and_empty() -> None:
    assert parse_variables(None) == {}
    assert parse_variables({}) == {}


def test_parse_variables_full_form() -> None:
    got = parse_variables({"gpus": GPUS})
    assert got == {
        "gpus": {
            "description": "GPUs per pod",
            "schema": {"type": "integer", "default": 1, "maximum": 4},
        }
    }


def test_parse_variables_short_form() -> None:
    got = parse_variables({"size": {"type": "string", "enum": ["sm", "md"], "description": "d"}})
    assert got == {"size": {"description": "d", "schema": {"type": "string", "enum": ["sm", "md"]}}}


def test_parse_variables_without_description() -> None:
    got = parse_variables({"lr": {"schema": {"type": "number"}}})
    assert got == {"lr": {"description": None, "schema": {"type": "number"}}}


def test_parse_variables_does_not_mutate_input() -> None:
    raw = {"size": {"type": "string", "description": "d"}}
    before = copy.deepcopy(raw)
    parse_variables(raw)
    assert raw == before


def test_parse_variables_all_types() -> None:
    raw = {
        "a": {"schema": {"type": "string", "default": "x"}},
        "b": {"schema": {"type": "integer", "minimum": 0, "maximum": 8, "default": 0}},
        "c": {"schema": {"type": "number", "minimum": 0.0, "maximum": 1, "default": 0.5}},
        "d": {"schema": {"type": "integer", "enum": [1, 2, 4]}},
        "e": {"schema": {"type": "number", "enum": [1, 2.5]}},
    }
    assert list(parse_variables(raw)) == ["a", "b", "c", "d", "e"]


def schema_error(raw: Any) -> VariableSchemaError:
    err: VariableSchemaError = raises(VariableSchemaError, parse_variables, raw)
    assert "\n" not in err.message
    return err


def test_variables_must_be_mapping() -> None:
    err = schema_error(["gpus"])
    assert err.message.startswith("variables must be a mapping")
    assert "got a list" in err.message


@pytest.mark.parametrize(("name", "fix"), [("gpu-count", "gpu_count"), ("2gpus", "_2gpus")])
def test_bad_variable_name(name: str, fix: str) -> None:
    err = schema_error({name: {"schema": {"type": "integer"}}})
    assert err.message.startswith(f"variable name {name!r} is not valid")
    assert f"(e.g. {fix})" in err.message
    assert err.fields == {"variable": name, "rule": "name"}


def test_non_string_variable_name() -> None:
    err = schema_error({3: {"schema": {"type": "integer"}}})
    assert "variable name 3 is not valid" in err.message


@pytest.mark.parametrize("decl", [None, "integer", 3, ["integer"], {"description": "x"}])
def test_declaration_needs_schema(decl: Any) -> None:
    err = schema_error({"gpus": decl})
    assert err.message.startswith("variable 'gpus': needs a schema")
    assert err.fields == {"variable": "gpus", "rule": "schema"}


def test_schema_must_be_mapping() -> None:
    err = schema_error({"gpus": {"schema": "integer"}})
    assert err.fields["rule"] == "schema"


def test_unknown_declaration_key() -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer"}, "help": "x"}})
    assert err.message == "variable 'gpus': unknown key 'help'; allowed: description, schema"


def test_description_must_be_string() -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer"}, "description": 3}})
    assert err.message == "variable 'gpus': description must be a string"


def test_type_required() -> None:
    err = schema_error({"gpus": {"schema": {"default": 1}}})
    assert err.message == "variable 'gpus': schema needs a type, one of string, integer, number"
    assert err.fields == {"variable": "gpus", "rule": "type"}


@pytest.mark.parametrize(
    ("vtype", "hint"),
    [
        ("int", " (did you mean 'integer'?)"),
        ("float", " (did you mean 'number'?)"),
        ("str", " (did you mean 'string'?)"),
        ("strng", " (did you mean 'string'?)"),
        ("boolean", ""),
        ("object", ""),
        (["integer", "null"], ""),
    ],
)
def test_type_must_be_supported(vtype: Any, hint: str) -> None:
    err = schema_error({"gpus": {"schema": {"type": vtype}}})
    assert err.message == (
        f"variable 'gpus': type {vtype!r} is not supported; "
        f"use one of string, integer, number{hint}"
    )


def test_unknown_schema_key_lists_allowed() -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer", "max": 4}}})
    assert err.message == (
        "variable 'gpus': unknown schema key 'max'; allowed: type, default, minimum, "
        "maximum, enum, description (did you mean 'maximum'?)"
    )
    assert err.fields == {"variable": "gpus", "rule": "unknown_key", "key": "max"}


def test_unknown_schema_key_without_suggestion() -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer", "pattern": "x"}}})
    assert err.message.endswith("maximum, enum, description")


@pytest.mark.parametrize("bound", ["minimum", "maximum"])
def test_bounds_only_for_numbers(bound: str) -> None:
    err = schema_error({"name": {"schema": {"type": "string", bound: 1}}})
    assert err.message == f"variable 'name': {bound} applies only to integer and number, not string"
    assert err.fields["rule"] == bound


@pytest.mark.parametrize("value", ["4", True, None, [4]])
def test_bounds_must_be_numeric(value: Any) -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer", "maximum": value}}})
    assert err.message == f"variable 'gpus': maximum must be a number, got {value!r}"


def test_minimum_not_above_maximum() -> None:
    err = schema_error({"gpus": {"schema": {"type": "integer", "minimum": 5, "maximum": 4}}})
    assert err.message == "variable 'gpus': minimum 5 is greater than maximum 4"


def test_minimum_equal_maximum_is_fine() -> None:
    assert parse_variables({"g": {"type": "integer", "minimum": 2, "maximum": 2}})


@pytest.mark.parametrize("enum", [[], "sm", {"sm": 1}, None])
def test_enum_must_be_non_empty_list(enum: Any) -> None:
    err = schema_error({"size": {"schema": {"type": "string", "enum": enum}}})
    assert err.message == "variable 'size': enum must be a non-empty list of allowed values"


@pytest.mark.parametrize(
    ("vtype", "enum", "bad"),
    [
        ("string", ["sm", 2], 2),
        ("integer", [1, "2"], "2"),
        ("integer", [1, 2.5], 2.5),
        ("integer", [1, True], True),
        ("number", [1.5, "x"], "x"),
    ],
)
def test_enum_items_match_type(vtype: str, enum: list[Any], bad: Any) -> None:
    err = schema_error({"v": {"schema": {"type": vtype, "enum": enum}}})
    assert err.message == f"variable 'v': enum item {bad!r} is not of type {vtype}"


@pytest.mark.parametrize(
    ("schema", "message", "rule"),
    [
        (
            {"type": "integer", "minimum": 0, "maximum": 4, "default": 9},
            "variable 'v': default 9 is above the maximum 4 (allowed 0–4)",
            "maximum",
        ),
        (
            {"type": "integer", "minimum": 1, "default": 0},
            "variable 'v': default 0 is below the minimum 1",
            "minimum",
        ),
        (
            {"type": "integer", "default": "2"},
            "variable 'v': default '2' is not of type integer",
            "type",
        ),
        (
            {"type": "string", "enum": ["sm", "md"], "default": "xl"},
            "variable 'v': default 'xl' is not one of 'sm', 'md'",
            "enum",
        ),
    ],
)
def test_default_must_satisfy_schema(schema: dict[str, Any], message: str, rule: str) -> None:
    err = schema_error({"v": {"schema": schema}})
    assert err.message == message
    assert err.fields["rule"] == rule
    assert err.fields["key"] == "default"
    assert err.fields["variable"] == "v"


# --- find_placeholders / check_template --------------------------------------------------


def test_find_placeholders_in_values_and_lists() -> None:
    tree = {
        "a": "${image_uri}",
        "b": ["{{ gpus }}", "x-{{size}}-${run_id}", 3, None, True],
        "c": {"d": {"e": "{{gpus}}{{lr}}"}},
        "{{key_var}}": "plain",
        "${key_macro}": 1,
    }
    found = find_placeholders(tree)
    assert found == Placeholders(variables=("gpus", "lr", "size"), macros=("image_uri", "run_id"))


def test_find_placeholders_whitespace_and_non_names() -> None:
    found = find_placeholders(
        {"a": "{{gpus}} {{  gpus  }} {{\tgpus\t}} {{1x}} {{a-b}} ${ image_uri } ${} {{}}"}
    )
    assert found == Placeholders(variables=("gpus",), macros=())


def test_find_placeholders_empty() -> None:
    assert find_placeholders({}) == Placeholders()
    assert find_placeholders("${author}") == Placeholders(variables=(), macros=("author",))


def test_placeholders_is_frozen() -> None:
    found = Placeholders(variables=("a",), macros=())
    with pytest.raises(AttributeError):
        found.variables = ()  # type: ignore[misc]


def test_check_template_ok() -> None:
    tree = parse_config(JOB_YAML)
    got = check_template(tree, parse_variables({"gpus": GPUS}))
    assert got == Placeholders(variables=("gpus",), macros=("image_uri",))


def test_check_template_all_known_macros() -> None:
    tree = {m: f"${{{m}}}" for m in KNOWN_MACROS}
    assert check_template(tree, {}).macros == tuple(sorted(KNOWN_MACROS))


def test_unknown_macro_with_suggestion() -> None:
    err = raises(TemplateError, check_template, {"image": "${imge_uri}"}, {})
    assert err.message == (
        "unknown macro ${imge_uri}; known macros: ${image_uri}, ${project_name}, "
        "${entity_name}, ${run_id}, ${run_name}, ${queue_name}, ${author} "
        "(did you mean ${image_uri}?)"
    )
    assert err.fields["macro"] == "imge_uri"
    assert err.fields["rule"] == "unknown_macro"


def test_unknown_macro_without_suggestion() -> None:
    err = raises(TemplateError, check_template, {"x": "echo ${HOME}"}, {})
    assert err.message.startswith("unknown macro ${HOME}; known macros: ${image_uri}")
    assert err.message.endswith("${author}")


def test_undeclared_variable() -> None:
    variables = parse_variables({"gpus": GPUS})
    err = raises(TemplateError, check_template, {"a": "{{foo}}"}, variables)
    assert err.message == (
        "config uses {{foo}} but it is not declared; declare it under variables (declared: gpus)"
    )
    assert err.fields == {"variable": "foo", "declared": ["gpus"], "rule": "undeclared"}


def test_undeclared_variable_with_suggestion() -> None:
    variables = parse_variables({"gpus": GPUS})
    err = raises(TemplateError, check_template, {"a": "{{gpu}}"}, variables)
    assert err.message.endswith("(declared: gpus); did you mean {{gpus}}?")


def test_undeclared_variable_none_declared() -> None:
    err = raises(TemplateError, check_template, {"a": "{{gpus}}"}, {})
    assert "(declared: none)" in err.message


def test_placeholder_in_key_is_not_checked() -> None:
    assert check_template({"{{nope}}": 1, "${nope}": 2}, {}) == Placeholders()


# --- coerce_value --------------------------------------------------------------------------

INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}


@pytest.mark.parametrize(("raw", "want"), [("2", 2), ("0", 0), ("-3", -3), ("+4", 4), (" 5 ", 5)])
def test_coerce_integer(raw: str, want: int) -> None:
    got = coerce_value("gpus", INT, raw)
    assert got == want
    assert type(got) is int


@pytest.mark.parametrize("raw", ["two", "2.5", "2.0", "", "1e3", "0x10", "1_000", "nan", "true"])
def test_coerce_integer_refused(raw: str) -> None:
    err = raises(VariableValueError, coerce_value, "gpus", INT, raw)
    assert err.message == f"variable 'gpus': {raw!r} is not an integer"
    assert err.fields == {"variable": "gpus", "value": raw, "rule": "type", "expected": "integer"}


def test_coerce_integer_two_message_exact() -> None:
    err = raises(VariableValueError, coerce_value, "gpus", INT, "two")
    assert str(err) == "variable 'gpus': 'two' is not an integer"


def test_coerce_integer_too_many_digits() -> None:
    with pytest.raises(VariableValueError):
        coerce_value("gpus", INT, "9" * 5000)


@pytest.mark.parametrize(
    ("raw", "want", "kind"),
    [
        ("2", 2, int),
        ("-7", -7, int),
        ("2.5", 2.5, float),
        ("2.0", 2.0, float),
        ("1e-3", 0.001, float),
        ("3E2", 300.0, float),
        (".5", 0.5, float),
        ("5.", 5.0, float),
    ],
)
def test_coerce_number(raw: str, want: float, kind: type) -> None:
    got = coerce_value("lr", NUM, raw)
    assert got == want
    assert type(got) is kind


@pytest.mark.parametrize("raw", ["fast", "nan", "inf", "1e999", "1,5", "", "--1"])
def test_coerce_number_refused(raw: str) -> None:
    err = raises(VariableValueError, coerce_value, "lr", NUM, raw)
    assert err.message == f"variable 'lr': {raw!r} is not a number"
    assert err.fields["expected"] == "number"


@pytest.mark.parametrize("raw", ["2", " spaced ", "", "{{gpus}}", "a\nb: c"])
def test_coerce_string_unchanged(raw: str) -> None:
    assert coerce_value("name", STR, raw) == raw


# --- resolve_values ------------------------------------------------------------------------


def declared(**schemas: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return parse_variables({name: {"schema": schema} for name, schema in schemas.items()})


def value_error(variables: dict[str, Any], values: dict[str, Any], **kw: Any) -> Any:
    err = raises(VariableValueError, resolve_values, variables, values, **kw)
    assert "\n" not in err.message
    return err


def test_resolve_fills_defaults_in_declaration_order() -> None:
    variables = declared(
        gpus={"type": "integer", "default": 1},
        size={"type": "string", "default": "md"},
        lr={"type": "number", "default": 0.001},
    )
    got = resolve_values(variables, {"size": "lg"})
    assert got == {"gpus": 1, "size": "lg", "lr": 0.001}
    assert list(got) == ["gpus", "size", "lr"]


def test_resolve_does_not_mutate_inputs() -> None:
    variables = declared(gpus={"type": "integer", "default": 1})
    values: dict[str, Any] = {}
    before = copy.deepcopy(variables)
    resolve_values(variables, values)
    assert values == {}
    assert variables == before


def test_resolve_empty() -> None:
    assert resolve_values({}, {}) == {}


def test_unknown_variable_for_queue() -> None:
    err = value_error(declared(gpus=INT), {"gpu": 2}, queue="gpu-queue")
    assert err.message == (
        "unknown variable 'gpu' for queue 'gpu-queue'; declared: gpus (did you mean 'gpus'?)"
    )
    assert err.fields == {"variable": "gpu", "queue": "gpu-queue", "rule": "declared"}


def test_unknown_variable_without_queue_or_suggestion() -> None:
    err = value_error(declared(gpus=INT), {"zzz": 2})
    assert err.message == "unknown variable 'zzz'; declared: gpus"


def test_unknown_variable_none_declared() -> None:
    err = value_error({}, {"gpus": 2}, queue="q")
    assert err.message == "unknown variable 'gpus' for queue 'q'; declared: none"


def test_required_variable() -> None:
    err = value_error(declared(x=INT), {})
    assert err.message == "variable 'x' is required (no default); pass --set x=VALUE"
    assert err.fields == {"variable": "x", "rule": "required"}


@pytest.mark.parametrize("value", ["x", "2", 2.5, True, False, None, [2], {"n": 2}])
def test_integer_wrong_type(value: Any) -> None:
    err = value_error(declared(gpus=INT), {"gpus": value})
    assert err.message == f"variable 'gpus': {value!r} is not of type integer"
    assert err.fields == {"variable": "gpus", "value": value, "rule": "type", "expected": "integer"}


def test_integer_wrong_type_message_exact() -> None:
    err = value_error(declared(gpus=INT), {"gpus": "x"})
    assert str(err) == "variable 'gpus': 'x' is not of type integer"


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_number_wrong_type(value: Any) -> None:
    err = value_error(declared(lr=NUM), {"lr": value})
    assert err.message == f"variable 'lr': {value!r} is not of type number"


@pytest.mark.parametrize("value", [2, 2.5, True, None])
def test_string_wrong_type(value: Any) -> None:
    err = value_error(declared(name=STR), {"name": value})
    assert err.message == f"variable 'name': {value!r} is not of type string"


def test_integral_float_is_an_integer() -> None:
    got = resolve_values(declared(gpus=INT), {"gpus": 2.0})
    assert got == {"gpus": 2}
    assert type(got["gpus"]) is int


def test_number_accepts_int_and_float() -> None:
    variables = declared(lr=NUM)
    assert resolve_values(variables, {"lr": 1}) == {"lr": 1}
    assert resolve_values(variables, {"lr": 0.5}) == {"lr": 0.5}


def test_above_maximum() -> None:
    variables = declared(gpus={"type": "integer", "minimum": 0, "maximum": 4})
    err = value_error(variables, {"gpus": 9})
    assert err.message == "variable 'gpus': 9 is above the maximum 4 (allowed 0–4)"
    assert err.fields == {"variable": "gpus", "value": 9, "rule": "maximum", "limit": 4}


def test_below_minimum() -> None:
    variables = declared(gpus={"type": "integer", "minimum": 1, "maximum": 4})
    err = value_error(variables, {"gpus": 0})
    assert err.message == "variable 'gpus': 0 is below the minimum 1 (allowed 1–4)"
    assert err.fields == {"variable": "gpus", "value": 0, "rule": "minimum", "limit": 1}


def test_one_sided_bounds() -> None:
    err = value_error(declared(gpus={"type": "integer", "maximum": 4}), {"gpus": 5})
    assert err.message == "variable 'gpus': 5 is above the maximum 4"
    err = value_error(declared(lr={"type": "number", "minimum": 0}), {"lr": -0.5})
    assert err.message == "variable 'lr': -0.5 is below the minimum 0"


def test_bounds_are_inclusive() -> None:
    variables = declared(gpus={"type": "integer", "minimum": 0, "maximum": 4})
    assert resolve_values(variables, {"gpus": 0}) == {"gpus": 0}
    assert resolve_values(variables, {"gpus": 4}) == {"gpus": 4}


def test_not_in_enum() -> None:
    variables = declared(size={"type": "string", "enum": ["sm", "md", "lg"]})
    err = value_error(variables, {"size": "xl"})
    assert err.message == "variable 'size': 'xl' is not one of 'sm', 'md', 'lg'"
    assert err.fields == {
        "variable": "size",
        "value": "xl",
        "rule": "enum",
        "allowed": ["sm", "md", "lg"],
    }


def test_integer_enum() -> None:
    variables = declared(gpus={"type": "integer", "enum": [1, 2, 4]})
    assert resolve_values(variables, {"gpus": 4}) == {"gpus": 4}
    err = value_error(variables, {"gpus": 3})
    assert err.message == "variable 'gpus': 3 is not one of 1, 2, 4"


def test_type_reported_before_enum() -> None:
    variables = declared(gpus={"type": "integer", "enum": [1, 2]})
    err = value_error(variables, {"gpus": "1"})
    assert err.fields["rule"] == "type"


def test_resolve_accepts_schema_with_description() -> None:
    variables = {"gpus": {"description": None, "schema": {"type": "integer", "description": "d"}}}
    assert resolve_values(variables, {"gpus": 1}) == {"gpus": 1}


# --- render --------------------------------------------------------------------------------


def test_whole_string_placeholder_is_typed() -> None:
    tree = {"i": "{{gpus}}", "f": "{{ lr }}", "s": "{{name}}", "m": "${run_id}"}
    got = render(tree, {"gpus": 2, "lr": 0.5, "name": "x"}, {"run_id": 42})
    assert got == {"i": 2, "f": 0.5, "s": "x", "m": 42}
    assert type(got["i"]) is int
    assert type(got["f"]) is float


def test_embedded_placeholder_is_formatted() -> None:
    tree = {"a": "gpu:{{gpus}}", "b": "lr={{lr}}", "c": "${image_uri}@{{ gpus }}"}
    got = render(tree, {"gpus": 2, "lr": 0.001}, MACROS)
    assert got == {"a": "gpu:2", "b": "lr=0.001", "c": "registry.local/train:abc123@2"}


def test_two_placeholders_side_by_side_are_strings() -> None:
    assert render({"a": "{{a}}{{b}}"}, {"a": 1, "b": 2}, {}) == {"a": "12"}


def test_whitespace_around_placeholder_makes_it_embedded() -> None:
    assert render({"a": " {{gpus}}"}, {"gpus": 2}, {}) == {"a": " 2"}


def test_keys_are_not_substituted() -> None:
    tree = {"{{gpus}}": "{{gpus}}", "${run_id}": "${run_id}"}
    assert render(tree, {"gpus": 2}, {"run_id": "r1"}) == {"{{gpus}}": 2, "${run_id}": "r1"}


def test_non_strings_pass_through() -> None:
    tree = {"a": [1, 2.5, True, None, {"b": False}], "c": [], "d": {}}
    assert render(tree, {}, {}) == tree


def test_render_returns_new_tree_and_leaves_input_untouched() -> None:
    tree = parse_config(JOB_YAML)
    before = copy.deepcopy(tree)
    got = render(tree, {"gpus": 2}, MACROS)
    assert tree == before
    assert got is not tree
    got["spec"]["template"]["spec"]["containers"].append("x")
    assert tree == before


def test_non_placeholder_dollar_and_braces_untouched() -> None:
    tree = {"a": "cost $5 {x} {{ 1x }} ${} $image_uri {{}}"}
    assert render(tree, {}, {}) == tree


@pytest.mark.parametrize(
    "value", ["x\n  evil: 1", "a\nb: c", "{{gpus}}", "${run_id}", "]: [", "{a: 1}", "- x"]
)
def test_injection_stays_a_plain_string(value: str) -> None:
    variables = declared(name=STR, gpus=INT)
    tree = parse_config("a: '{{name}}'\nb: 'x-{{name}}'\nc: {d: '{{gpus}}'}\n")
    got = render(tree, resolve_values(variables, {"name": value, "gpus": 2}), {"run_id": "r1"})
    assert got == {"a": value, "b": f"x-{value}", "c": {"d": 2}}
    assert parse_config(yaml.safe_dump(got)) == got


def test_value_is_never_expanded_twice() -> None:
    got = render({"a": "{{a}}", "b": "<{{a}}>"}, {"a": "${run_id}{{b}}", "b": "no"}, {"run_id": 1})
    assert got == {"a": "${run_id}{{b}}", "b": "<${run_id}{{b}}>"}


def test_macro_value_is_never_expanded() -> None:
    got = render({"a": "${author}", "b": "by ${author}"}, {"gpus": 2}, {"author": "{{gpus}}"})
    assert got == {"a": "{{gpus}}", "b": "by {{gpus}}"}


@pytest.mark.parametrize("macros", [{}, {"image_uri": None}])
def test_missing_macro_never_renders_none(macros: dict[str, Any]) -> None:
    for tree in ({"image": "${image_uri}"}, {"image": "repo/${image_uri}"}):
        err = raises(TemplateError, render, tree, {}, macros)
        assert err.message == "macro ${image_uri} has no value for this run"
        assert err.fields == {"placeholder": "${image_uri}", "rule": "missing_value"}


def test_unused_missing_macro_is_fine() -> None:
    assert render({"a": "plain"}, {}, {"image_uri": None}) == {"a": "plain"}


@pytest.mark.parametrize("values", [{}, {"gpus": None}])
def test_missing_variable_value(values: dict[str, Any]) -> None:
    err = raises(TemplateError, render, {"a": ["x{{ gpus }}"]}, values, {})
    assert err.message == "variable {{gpus}} has no value; pass --set gpus=VALUE"


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], ("a",)])
def test_structured_value_refused(value: Any) -> None:
    err = raises(TemplateError, render, {"a": "{{v}}"}, {"v": value}, {})
    assert err.message.startswith("{{v}}: value must be a string or a number, got ")
    with pytest.raises(TemplateError):
        render({"a": "${author}"}, {}, {"author": value})


def test_render_scalar_tree() -> None:
    assert render("{{gpus}}", {"gpus": 2}, {}) == 2
    assert render(["a", "${run_id}"], {}, {"run_id": "r"}) == ["a", "r"]
    assert render(7, {}, {}) == 7


def test_render_config_json_and_yaml_agree() -> None:
    variables = {"gpus": GPUS}
    a, _ = render_config(NFS_YAML, variables, {"gpus": 2}, MACROS)
    b, _ = render_config(NFS_JSON, variables, {"gpus": 2}, MACROS)
    assert a == b


# --- property: a value never changes the shape of the tree ------------------------------

PROPERTY_TEMPLATE = """\
whole: '{{ name }}'
embedded: 'pre-{{name}}-post'
nested: {list: ['{{name}}', 'x', 3], '{{name}}': key}
"""


def keys_of(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: keys_of(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [keys_of(item) for item in tree]
    return None


@settings(database=None, deadline=None, max_examples=200)
@given(value=st.text())
def test_any_text_value_keeps_shape_and_appears_verbatim(value: str) -> None:
    tree = parse_config(PROPERTY_TEMPLATE)
    rendered, resolved = render_config(
        PROPERTY_TEMPLATE, {"name": {"type": "string"}}, {"name": value}, {}
    )
    assert resolved == {"name": value}
    assert keys_of(rendered) == keys_of(tree)
    assert rendered["whole"] == value
    assert rendered["embedded"] == f"pre-{value}-post"
    assert rendered["nested"] == {"list": [value, "x", 3], "{{name}}": "key"}
    assert json.loads(json.dumps(rendered)) == rendered
