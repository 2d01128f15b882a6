"""Every error launchyard raises on purpose, in one tree.

    LaunchyardError                      code            HTTP
    ├── InvalidInputError                invalid_input    422
    │   ├── ConfigSyntaxError            config_syntax    422   malformed YAML/JSON (line, column)
    │   ├── TemplateError                template         422   unknown macro, undeclared variable
    │   ├── VariableSchemaError          variable_schema  422   a queue declares a bad variable
    │   └── VariableValueError           variable_value   422   a run's value breaks the rule
    ├── AuthError                        unauthenticated  401   missing or unknown API key
    ├── PermissionDeniedError            forbidden        403   key valid, role too small
    ├── NotFoundError                    not_found        404   entity, queue, run, job, agent
    ├── ConflictError                    conflict         409   already exists, wrong state
    │   └── StaleLeaseError              stale_lease      409   an agent lost its lease on a run
    ├── BackendError                     backend          502   an engine refused or failed
    │   └── MissingDependencyError       missing_dependency 500 an optional extra is not installed
    └── ServerUnavailableError           unavailable      503   server or database unreachable

The server answers ``{"error": {"code", "message", "fields"}}`` and the client
raises the same class again from it (``error_from_payload``), so a caller
handles one tree whichever side of the wire an error started on. Messages name
the value, the rule and the fix.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LaunchyardError(Exception):
    code: ClassVar[str] = "error"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})

    def to_payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


class InvalidInputError(LaunchyardError):
    code = "invalid_input"
    status_code = 422


class ConfigSyntaxError(InvalidInputError):
    code = "config_syntax"


class TemplateError(InvalidInputError):
    code = "template"


class VariableSchemaError(InvalidInputError):
    code = "variable_schema"


class VariableValueError(InvalidInputError):
    code = "variable_value"


class AuthError(LaunchyardError):
    code = "unauthenticated"
    status_code = 401


class PermissionDeniedError(LaunchyardError):
    code = "forbidden"
    status_code = 403


class NotFoundError(LaunchyardError):
    code = "not_found"
    status_code = 404


class ConflictError(LaunchyardError):
    code = "conflict"
    status_code = 409


class StaleLeaseError(ConflictError):
    code = "stale_lease"


class BackendError(LaunchyardError):
    code = "backend"
    status_code = 502


class MissingDependencyError(BackendError):
    code = "missing_dependency"
    status_code = 500


class ServerUnavailableError(LaunchyardError):
    code = "unavailable"
    status_code = 503


def _all_subclasses(cls: type[LaunchyardError]) -> list[type[LaunchyardError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_CODE: dict[str, type[LaunchyardError]] = {
    cls.code: cls for cls in _all_subclasses(LaunchyardError)
}


def error_from_payload(payload: Any, status_code: int) -> LaunchyardError:
    """Rebuild the error a server sent; unknown shapes become a plain LaunchyardError."""
    body = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        cls = ERRORS_BY_CODE.get(str(body.get("code")), LaunchyardError)
        return cls(body["message"], fields=body.get("fields") or {})
    if isinstance(payload, dict) and "detail" in payload:  # FastAPI's own validation errors
        return InvalidInputError(
            _format_detail(payload["detail"]), fields={"detail": payload["detail"]}
        )
    return LaunchyardError(f"server answered HTTP {status_code}: {payload!r}"[:500])


def _format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg')}")
        return "; ".join(parts)
    return str(detail)
