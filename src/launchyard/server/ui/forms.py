"""HTML forms: reading urlencoded bodies, and mapping template variables to and from fields.

A queue's variable becomes the field the browser can check itself (an integer
with bounds is ``<input type=number min max step=1>``, an enum a ``<select>``);
the server still checks every value through the same services as the API, so
the form refuses exactly what the API refuses, with the API's message.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from launchyard import templating
from launchyard.errors import InvalidInputError, VariableSchemaError
from launchyard.models.runs import Priority
from launchyard.server.schemas.runs import RunSubmitRequest
from launchyard.server.services.jobs import LATEST
from launchyard.server.tables import QueueRow

MAX_FORM_BYTES = 1_000_000


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded); the last value of a repeated name."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise InvalidInputError("send the form as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInputError(f"the form is larger than {MAX_FORM_BYTES} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


# --- the launch drawer -------------------------------------------------------------------------


@dataclass
class VariableField:
    name: str
    label: str
    description: str | None
    vtype: str
    input: str  # "number" | "select" | "text"
    value: str
    required: bool
    minimum: Any = None
    maximum: Any = None
    step: str = "any"
    options: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def variable_fields(queue: QueueRow, values: dict[str, Any]) -> list[VariableField]:
    """One field per variable the queue declares, showing ``values`` (else the default)."""
    fields = []
    for name, decl in queue.variables.items():
        schema = decl["schema"]
        vtype = schema.get("type", "string")
        value = values.get(name, schema.get("default"))
        f = VariableField(
            name=name,
            label=name,
            description=decl.get("description"),
            vtype=vtype,
            input="text",
            value=_text(value),
            required="default" not in schema,
        )
        if "enum" in schema:
            f.input = "select"
            f.options = [_text(o) for o in schema["enum"]]
        elif vtype in ("integer", "number"):
            f.input = "number"
            f.minimum, f.maximum = schema.get("minimum"), schema.get("maximum")
            f.step = "1" if vtype == "integer" else "any"
        fields.append(f)
    return fields


def launch_request(
    form: dict[str, str],
    queues: dict[str, QueueRow],
    *,
    project: str,
    job: str,
    spec_command: list[str],
) -> RunSubmitRequest:
    """The drawer's fields as the API's submit request (values typed per the queue)."""
    queue_name = form.get("queue", "")
    queue = queues.get(queue_name)
    if queue is None:
        raise InvalidInputError(
            f"queue {queue_name!r} is not one of: {', '.join(queues) or 'none'}",
            fields={"field": "queue", "value": queue_name},
        )
    values: dict[str, Any] = {}
    for name, decl in queue.variables.items():
        raw = form.get(f"v.{queue.name}.{name}", "")
        if raw.strip() == "":
            continue  # the queue's default applies (or the service says it is required)
        schema = decl["schema"]
        if schema.get("type") in ("integer", "number"):
            values[name] = templating.coerce_value(name, schema, raw)
        else:
            values[name] = raw
    command = None
    raw_command = form.get("command", "").strip()
    if raw_command:
        try:
            command = shlex.split(raw_command)
        except ValueError as exc:
            raise InvalidInputError(
                f"command {raw_command!r}: {exc}; quote it as in a shell",
                fields={"field": "command"},
            ) from None
        if command == spec_command:
            command = None  # unchanged: the job version's own command
    priority = form.get(f"priority.{queue.name}", "")
    return RunSubmitRequest(
        queue=queue.name,
        project=project,
        job=f"{job}:{form.get('version') or LATEST}",
        values=values,
        command=command,
        name=form.get("name", "").strip() or None,
        priority=Priority(priority) if priority in set(Priority) else None,
        time_limit=form.get("time_limit", "").strip() or None,
    )


def command_text(command: list[str] | None) -> str:
    return shlex.join(command) if command else ""


# --- the queue form's variable rows ------------------------------------------------------------

ROW_KEYS = ("type", "default", "minimum", "maximum", "enum", "description")


def variable_rows(form: dict[str, str]) -> dict[str, dict[str, str]]:
    """``var.NAME.KEY`` fields, grouped by variable, in the order they came."""
    rows: dict[str, dict[str, str]] = {}
    for key, value in form.items():
        prefix, _, rest = key.partition(".")
        name, _, part = rest.rpartition(".")
        if prefix == "var" and name and part in ROW_KEYS:
            rows.setdefault(name, {})[part] = value
    return rows


def _typed(name: str, what: str, vtype: str, raw: str) -> Any:
    try:
        return templating.coerce_value(name, {"type": vtype}, raw)
    except InvalidInputError:
        kind = "an integer" if vtype == "integer" else "a number"
        raise VariableSchemaError(
            f"variable {name!r}: {what} {raw!r} is not {kind}",
            fields={"variable": name, "rule": what, "value": raw},
        ) from None


def variables_from_rows(rows: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The declarations the API takes, from the rows; the service then checks them all."""
    variables: dict[str, Any] = {}
    for name, row in rows.items():
        vtype = row.get("type", "string") or "string"
        schema: dict[str, Any] = {"type": vtype}
        numeric = vtype in ("integer", "number")
        if row.get("default", "").strip():
            raw = row["default"]
            schema["default"] = _typed(name, "default", vtype, raw) if numeric else raw
        for bound in ("minimum", "maximum"):
            raw = row.get(bound, "").strip()
            if raw:
                # Bounds are numbers even for an integer variable (1.5 is a valid minimum).
                schema[bound] = _typed(name, bound, "number", raw)
        if row.get("enum", "").strip():
            items = [i.strip() for i in row["enum"].split(",") if i.strip()]
            schema["enum"] = [_typed(name, "enum item", vtype, i) if numeric else i for i in items]
        decl: dict[str, Any] = {"schema": schema}
        if row.get("description", "").strip():
            decl["description"] = row["description"].strip()
        variables[name] = decl
    return variables


def rows_for(names: list[str], current: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Rows to show after a parse: the variables found, keeping what was typed for each."""
    return [{"name": n, **{k: current.get(n, {}).get(k, "") for k in ROW_KEYS}} for n in names]
