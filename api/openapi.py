"""The OpenAPI 3.1 document, generated from the endpoint declarations and their models, and a
plain HTML page that renders it (served by the app itself: no CDN, no JavaScript)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import pydantic
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.endpoints import Endpoint
from api.idempotency import HEADER, MAX_KEY_LENGTH

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` names each offending field."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[dict[str, str]] | None = None


_ERROR_TITLES = {
    400: "Malformed request (JSON, cursor or header)",
    401: "No valid bearer token",
    403: "The token's role lacks the permission",
    404: "Not found",
    409: "Conflict (state, uniqueness, or an Idempotency-Key reused with another body)",
    422: "Invalid field (named in `errors`)",
    502: "The trading platform refused or failed",
    503: "A part of the system is down",
    504: "The trading platform did not confirm in time (the command stays queued)",
}


def document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    components = _Components(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = components.operation(
            endpoint
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


Mode = Literal["validation", "serialization"]


class _Components:
    """Every model's schema, once: request bodies as validated, responses as serialized;
    pydantic models through pydantic, msgspec structs (the plan format) through msgspec."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        wanted: list[tuple[Any, Mode]] = [(Problem, "serialization")]
        for endpoint in endpoints:
            if endpoint.body is not None:
                wanted.append((endpoint.body, "validation"))
            if endpoint.response is not None:
                wanted.append((endpoint.response, "serialization"))
            if endpoint.query is not None:  # its enums' `$defs`, which its parameters refer to
                wanted.append((endpoint.query, "validation"))
        wanted = list(dict.fromkeys(wanted))
        models = [(k, m) for k, m in wanted if _is_pydantic(k)]
        refs, found = models_json_schema(models, ref_template=REF)
        self.refs: dict[tuple[Any, Mode], dict[str, Any]] = dict(refs)
        self.schemas: dict[str, Any] = dict(found.get("$defs", {}))
        structs = list(dict.fromkeys(k for k, _ in wanted if not _is_pydantic(k)))
        if structs:
            struct_refs, components = msgspec.json.schema_components(
                structs, ref_template=REF.replace("{model}", "{name}")
            )
            self.schemas.update(components)
            for kind, ref in zip(structs, struct_refs, strict=True):
                for mode in ("validation", "serialization"):
                    self.refs[(kind, mode)] = dict(ref)

    def operation(self, endpoint: Endpoint) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "parameters": _parameters(endpoint),
            "responses": self._responses(endpoint),
            "security": [{"bearer": []}] if endpoint.permission else [],
        }
        if endpoint.permission:
            operation["description"] = f"Needs the permission `{endpoint.permission.value}`."
        if endpoint.body is not None:
            schema = self.refs[(endpoint.body, "validation")]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        return operation

    def _responses(self, endpoint: Endpoint) -> dict[str, Any]:
        content: dict[str, Any] = {}
        for media in endpoint.content:
            if media != "application/json":
                content[media] = {"schema": {"type": "string"}}
            elif endpoint.response is not None:
                content[media] = {"schema": self.refs[(endpoint.response, "serialization")]}
            else:
                content[media] = {"schema": {}}
        ok = {"description": "OK", "content": content}
        responses: dict[str, Any] = {str(s): ok for s in (endpoint.status, *endpoint.also)}
        problem = {"application/problem+json": {"schema": self.refs[(Problem, "serialization")]}}
        for status in _error_statuses(endpoint):
            responses[str(status)] = {"description": _ERROR_TITLES[status], "content": problem}
        return responses


def _is_pydantic(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query)
    if endpoint.idempotent:
        own = (
            "Required. Retry safely: the same key and request answers what the first made, "
            "as it stands now; another request under the key is a 409."
        )
        stored = "Retry safely: the same key and body returns the first answer."
        parameters.append(
            {
                "name": HEADER,
                "in": "header",
                "required": endpoint.own_key,
                "description": own if endpoint.own_key else stored,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            }
        )
    return parameters


def _query_parameters(model: type[pydantic.BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _error_statuses(endpoint: Endpoint) -> list[int]:
    statuses = set(endpoint.errors)
    if endpoint.permission is not None:
        statuses |= {401, 403}
    if endpoint.body is not None or endpoint.query is not None:
        statuses |= {400, 422}
    if endpoint.idempotent:
        statuses |= {400, 409}
    if "{" in endpoint.path:
        statuses.add(404)
    return sorted(statuses)


def docs_page(spec: dict[str, Any]) -> str:
    """A readable page of every operation: method, path, summary, permission, parameters,
    body and answers, linking to the JSON document for the schemas."""
    info = spec["info"]
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>{html.escape(info['title'])} API</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem}code{background:#f3f3f3;padding:0 .2em}h3{margin-bottom:.2em}"
        ".m{font-weight:700;text-transform:uppercase}</style>",
        f"<h1>{html.escape(info['title'])} {html.escape(info['version'])}</h1>",
        "<p>Machine-readable: <a href=/api/openapi.json>/api/openapi.json</a> (OpenAPI 3.1). "
        "Send <code>Authorization: Bearer TOKEN</code>; errors are RFC 9457 "
        "<code>application/problem+json</code>.</p>",
    ]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            parts.append(_docs_operation(path, method, operation))
    return "\n".join(parts) + "\n</html>\n"


def _docs_operation(path: str, method: str, operation: dict[str, Any]) -> str:
    params = ", ".join(
        f"<code>{html.escape(p['name'])}</code> ({p['in']})" for p in operation["parameters"]
    )
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    body_ref = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
    answers = ", ".join(operation["responses"])
    return (
        f"<h3><span class=m>{method}</span> <code>{html.escape(path)}</code></h3>"
        f"<p>{html.escape(operation['summary'])} "
        f"{html.escape(operation.get('description', 'Public.'))}<br>"
        + (f"Parameters: {params}<br>" if params else "")
        + (f"Body: <code>{html.escape(body_ref)}</code><br>" if body_ref else "")
        + f"Answers: {answers}</p>"
    )
