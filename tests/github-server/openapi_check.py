"""Checks requests and responses against GitHub's OpenAPI description.

The heavy lifting is done by ``openapi-core`` (OpenAPI 3.0: ``nullable``, ``$ref``
into components, path/query parameter casting, required request bodies, per-status
response schemas, media types).  This module adds what the library does not do for us:

* routing a request path to a spec path template, including GitHub's
  ``x-multi-segment`` parameters (``/commits/{ref}`` where ``ref`` may be
  ``heads/main``), which openapi-core would otherwise report as "path not found";
* turning openapi-core's exceptions into short, human-readable problem strings;
* the list of statuses GitHub returns on every endpoint although the description does
  not declare them (401, 403, 404, 429, 5xx): see ``UNDECLARED_BUT_REAL``.

The spec file is only read, never modified; the in-memory copy is not changed either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

try:
    from openapi_core import OpenAPI
    from openapi_core.testing import MockRequest, MockResponse
except ImportError as exc:  # pragma: no cover - environment problem, say how to fix it
    raise SystemExit(
        f"{exc}: install the fake GitHub server's requirements first:\n"
        "  .stack/venv/bin/python -m pip install -r tests/github-server/requirements.txt"
    ) from None

# The description's only server.  Requests are validated as if they had been sent
# there, after the server's own prefix (e.g. /api/v3) has been stripped.
SPEC_HOST = "https://api.github.com"

# Statuses GitHub really answers on any endpoint that the description leaves out for
# most operations.  A response with one of these is accepted when the operation does
# not declare it; its body must then be GitHub's usual error object (a JSON object with
# a string ``message``).  Everything else undeclared is a violation.
UNDECLARED_BUT_REAL = {
    401: "bad credentials",
    403: "forbidden / rate limited",
    404: "not found (also: no access to the repository)",
    429: "secondary rate limit",
    500: "server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def merge_specs(paths: list[str]) -> dict:
    """One description from several cuts of the same one (the shared reference and
    the cut scripts/stack/github-reference makes): their paths and components
    together. A path or component both hold must be identical, and so must
    ``info`` (the same version of GitHub's description)."""
    merged: dict | None = None
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        if merged is None:
            merged = spec
            continue
        if spec.get("info") != merged.get("info"):
            raise SystemExit(f"{path}: not the same version of the description as {paths[0]}")
        for name, item in spec.get("paths", {}).items():
            if merged["paths"].setdefault(name, item) != item:
                raise SystemExit(f"{path}: path {name} differs from {paths[0]}'s")
        for kind, items in spec.get("components", {}).items():
            into = merged.setdefault("components", {}).setdefault(kind, {})
            for name, value in items.items():
                if into.setdefault(name, value) != value:
                    raise SystemExit(f"{path}: component {kind}/{name} differs from {paths[0]}'s")
    assert merged is not None, "no description given"
    return merged


@dataclass
class Route:
    """A request path matched to one of the description's path templates."""

    template: str
    params: dict[str, str]
    multi_segment: set[str] = field(default_factory=set)

    def spec_path(self) -> str:
        """The path to hand to openapi-core (multi-segment values with %2F)."""
        path = self.template
        for name, value in self.params.items():
            if name in self.multi_segment:
                enc = quote(value, safe="")
            else:
                enc = quote(value, safe="%")
            path = path.replace("{" + name + "}", enc)
        return path


class SpecChecker:
    def __init__(self, spec_path: str | list[str], allow_unknown: bool = False):
        # Stricter than the description by default: a query parameter or top-level body
        # property the operation does not define is one GitHub silently ignores (a
        # misspelt ``enviroment`` filter returns *every* deployment), so it is a problem.
        self.allow_unknown = allow_unknown
        paths = [spec_path] if isinstance(spec_path, str) else list(spec_path)
        self.spec = merge_specs(paths)
        if not str(self.spec.get("openapi", "")).startswith("3.0"):
            raise SystemExit(f"{spec_path}: expected an OpenAPI 3.0 description")
        # Validates the description itself too (openapi-spec-validator).
        self.app = OpenAPI.from_dict(self.spec)
        self._routes = [self._compile(t) for t in self.spec["paths"]]

    # ---------------------------------------------------------------- routing

    def _resolve(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            node = self.spec
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
        return obj

    def _compile(self, template: str):
        multi: set[str] = set()
        item = self.spec["paths"][template]
        for op_name, op in item.items():
            params = item.get("parameters", []) + (
                op.get("parameters", []) if op_name in HTTP_METHODS else []
            )
            for p in params:
                p = self._resolve(p)
                if p.get("in") == "path" and p.get("x-multi-segment"):
                    multi.add(p["name"])
        segments = template.strip("/").split("/")
        parts = []
        for seg in segments:
            m = re.fullmatch(r"\{(\w+)\}", seg)
            if m:
                name = m.group(1)
                parts.append(f"(?P<{name}>.+)" if name in multi else f"(?P<{name}>[^/]+)")
            else:
                parts.append(re.escape(seg))
        regex = re.compile("^/" + "/".join(parts) + "$")
        # Prefer templates whose earlier segments are literal: /releases/latest beats
        # /releases/{release_id}.
        rank = tuple(0 if seg.startswith("{") else 1 for seg in segments)
        return template, regex, rank, multi

    def route(self, api_path: str) -> Route | None:
        """Match a raw (still percent-encoded) path to a template."""
        best = None
        for template, regex, rank, multi in self._routes:
            m = regex.match(api_path)
            if m and (best is None or rank > best[0]):
                best = (rank, template, m, multi)
        if best is None:
            return None
        _, template, m, multi = best
        params = {k: unquote(v) for k, v in m.groupdict().items()}
        return Route(template, params, set(multi))

    def operation(self, route: Route | None, method: str) -> dict | None:
        if route is None:
            return None
        return self.spec["paths"][route.template].get(method.lower())

    def declared_statuses(self, route: Route | None, method: str) -> set[int]:
        op = self.operation(route, method) or {}
        return {int(s) for s in op.get("responses", {}) if s.isdigit()}

    def doc_url(self, route: Route | None, method: str) -> str:
        op = self.operation(route, method) or {}
        return op.get("externalDocs", {}).get("url", "https://docs.github.com/rest")

    # ------------------------------------------------------------- validation

    def _mock_request(self, method, api_path, query, headers, body, content_type):
        route = self.route(api_path)
        path = route.spec_path() if route else api_path
        return MockRequest(
            SPEC_HOST,
            method.lower(),
            path,
            args=query,
            headers=headers,
            data=body or None,
            content_type=content_type or "",
        )

    def check_request(self, method, api_path, query, headers, body: bytes, content_type):
        """Return a list of problems (empty when the request is valid)."""
        route = self.route(api_path)
        if route is None:
            return [f"no path in GitHub's OpenAPI description matches {api_path}"]
        allowed = sorted(m.upper() for m in self.spec["paths"][route.template] if m in HTTP_METHODS)
        if method.lower() not in self.spec["paths"][route.template]:
            return [f"GitHub's OpenAPI description has no {method.upper()} operation for {route.template} "
                    f"(allowed: {', '.join(allowed)})"]
        req = self._mock_request(method, api_path, query, headers, body, content_type)
        problems: list[str] = []
        for err in self.app.iter_request_errors(req):
            problems.extend(describe(err))
        if not self.allow_unknown:
            problems.extend(self._unknown_fields(route, method, query, body))
        return problems

    def _unknown_fields(self, route: Route, method: str, query, body: bytes) -> list[str]:
        item = self.spec["paths"][route.template]
        op = item[method.lower()]
        params = [self._resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        known_query = {p["name"] for p in params if p.get("in") == "query"}
        problems = [
            f"query parameter {name!r} is not defined for {method.upper()} {route.template} "
            f"(GitHub would silently ignore it; defined: {', '.join(sorted(known_query)) or 'none'})"
            for name in dict(query) if name not in known_query
        ]
        schema = self._resolve(
            self._resolve(op.get("requestBody", {})).get("content", {}).get("application/json", {}).get("schema", {})
        )
        if body and "properties" in schema and schema.get("additionalProperties") is None:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None  # already reported by openapi-core
            if isinstance(doc, dict):
                problems += [
                    f"request body property {name!r} is not defined for {method.upper()} {route.template} "
                    f"(GitHub would silently ignore it)"
                    for name in doc if name not in schema["properties"]
                ]
        return problems

    def check_response(self, method, api_path, query, status, headers, body: bytes, content_type):
        """Return a list of problems with a response the server is about to send."""
        route = self.route(api_path)
        declared = self.declared_statuses(route, method)
        if route is not None and status not in declared:
            if status in UNDECLARED_BUT_REAL:
                return check_error_body(status, body)
            return [f"status {status} is not declared for {method.upper()} {route.template} "
                    f"(declared: {', '.join(map(str, sorted(declared)))}; allowed anyway because GitHub "
                    f"really sends them: {', '.join(map(str, sorted(UNDECLARED_BUT_REAL)))})"]
        req = self._mock_request(method, api_path, query, {}, b"", "application/json")
        resp = MockResponse(body, status_code=status, headers=headers, content_type=content_type or "")
        problems: list[str] = []
        for err in self.app.iter_response_errors(req, resp):
            problems.extend(describe(err))
        return problems


def check_error_body(status: int, body: bytes) -> list[str]:
    """GitHub's generic error object, for statuses the description does not declare."""
    if not body:
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        return []  # GitHub's 5xx pages are sometimes HTML; tests may fake that on purpose.
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
        return [f"undeclared status {status}: body must be an object with a string 'message'"]
    return []


def describe(err: Exception) -> list[str]:
    """Flatten an openapi-core error (and its cause chain) into readable strings."""
    name = type(err).__name__
    cause = err.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(err, "schema_errors", None)
    if schema_errors:
        where = "request body" if "Request" in name else "response body" if "Data" in name else name
        if "Parameter" in name or "Header" in name:
            where = str(err)
        out = []
        for se in schema_errors:
            path = "/".join(str(p) for p in se.absolute_path)
            detail = se.message
            if se.context:  # oneOf/anyOf: say why each branch failed
                detail += " (" + "; ".join(sorted({c.message for c in se.context})) + ")"
            out.append(f"{where}{' at ' + path if path else ''}: {detail}")
        return out
    if cause is not None and str(cause) not in str(err):
        return [f"{err}: {cause}"]
    return [str(err) or name]
