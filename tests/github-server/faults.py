"""Injected faults: "the next N matching requests get this answer instead".

A fault is registered with ``POST /_control/faults``::

    {"method": "POST",                 # optional; omitted or "*" = any method
     "path": "/deployments$",          # regex, re.search on the path after the prefix
     "request_body": "\"state\":\"success\"",  # optional regex on the raw request body
     "status": 409,                    # optional; omitted = only delay, then answer normally
     "kind": "status_checks",          # optional; picks one of several realistic bodies
     "body": {...},                    # optional; replaces the default body (null = empty)
     "headers": {"retry-after": "2"},  # optional; added to / replace response headers
     "delay_ms": 0,                    # optional; sleep before answering (timeouts)
     "times": 1}                       # optional; default 1, null = every matching request

Default bodies are the ones GitHub really sends (see ``default_answer``).
"""

from __future__ import annotations

import json
import re

KINDS = {
    202: ("auto_merged",),
    401: ("bad_credentials",),
    403: ("forbidden", "secondary_rate_limit", "rate_limit"),
    404: ("not_found",),
    409: ("merge_conflict", "status_checks"),
    422: ("validation",),
    429: ("secondary_rate_limit",),
}
DOCS = "https://docs.github.com/rest"
SECONDARY_DOCS = (
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)


class FaultError(ValueError):
    pass


def parse_fault(doc: dict, ident: int) -> dict:
    if not isinstance(doc, dict):
        raise FaultError("fault must be a JSON object")
    unknown = set(doc) - {"method", "path", "request_body", "status", "kind", "body", "headers", "delay_ms", "times"}
    if unknown:
        raise FaultError(f"unknown fault fields: {sorted(unknown)}")
    path = doc.get("path", "")
    try:
        path_re = re.compile(path)
        body_re = re.compile(doc["request_body"]) if doc.get("request_body") else None
    except re.error as exc:
        raise FaultError(f"bad regex: {exc}") from None
    status = doc.get("status")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise FaultError("status must be an integer HTTP status")
    if status is None and not doc.get("delay_ms"):
        raise FaultError("a fault needs a status, a delay_ms, or both")
    kind = doc.get("kind")
    if kind is not None and kind not in KINDS.get(status, ()):
        raise FaultError(f"kind {kind!r} is not known for status {status}; known: {KINDS.get(status, ())}")
    times = doc.get("times", 1)
    if times is not None and (not isinstance(times, int) or times < 1):
        raise FaultError("times must be a positive integer or null (= unlimited)")
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, (str, int)) for v in headers.values()):
        raise FaultError("headers must be an object of strings")
    method = (doc.get("method") or "*").upper()
    return {
        "id": ident,
        "method": method,
        "path": path,
        "request_body": doc.get("request_body"),
        "status": status,
        "kind": kind,
        "body": doc["body"] if "body" in doc else ...,  # ... = use the default body
        "headers": {k.lower(): str(v) for k, v in headers.items()},
        "delay_ms": int(doc.get("delay_ms") or 0),
        "times": times,
        "hits": 0,
        "_path_re": path_re,
        "_body_re": body_re,
    }


def public(fault: dict) -> dict:
    out = {k: v for k, v in fault.items() if not k.startswith("_")}
    if out["body"] is ...:
        out["body"] = "(default)"
    return out


class Faults:
    def __init__(self):
        self.items: list[dict] = []
        self.next_id = 1

    def add(self, doc: dict) -> dict:
        fault = parse_fault(doc, self.next_id)
        self.next_id += 1
        self.items.append(fault)
        return fault

    def clear(self):
        self.items.clear()

    def take(self, method: str, api_path: str, body: bytes) -> dict | None:
        """The first matching fault, consumed once (removed when used up)."""
        text = body.decode("utf-8", "replace")
        for fault in self.items:
            if fault["method"] not in ("*", method.upper()):
                continue
            if not fault["_path_re"].search(api_path):
                continue
            if fault["_body_re"] is not None and not fault["_body_re"].search(text):
                continue
            fault["hits"] += 1
            if fault["times"] is not None and fault["hits"] >= fault["times"]:
                self.items.remove(fault)
            return fault
        return None


def _ref_of(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("ref"), str):
            return doc["ref"]
    except ValueError:
        pass
    return "topic-branch"


def default_answer(status: int, kind: str | None, request_body: bytes, now: float,
                   operation_id: str | None = None) -> tuple[dict | None, dict]:
    """(body, extra headers) GitHub sends for this status/kind (and operation)."""
    ref = _ref_of(request_body)
    kind = kind or (KINDS.get(status) or (None,))[0]
    if status == 202:
        return {"message": f"Auto-merged main into {ref} on deployment."}, {}
    if status == 401:
        return {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}, {}
    if status == 403 and kind == "secondary_rate_limit" or status == 429:
        return {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                       "If you reach out to GitHub Support for help, please include the request ID.",
            "documentation_url": SECONDARY_DOCS,
            "status": str(status),
        }, {"retry-after": "1"}
    if status == 403 and kind == "rate_limit":
        return {
            "message": "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, "
                       "please include the request ID.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            "status": "403",
        }, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 1)}
    if status == 403:
        return {"message": "Resource not accessible by integration", "documentation_url": DOCS, "status": "403"}, {}
    if status == 404:
        return {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, {}
    if status == 409 and kind == "status_checks":
        return {
            "message": f"Conflict: Commit status checks failed for {ref}.",
            "errors": [{
                "contexts": [{"context": "ci/test", "state": "failure"}],
                "resource": "Deployment",
                "field": "required_contexts",
                "code": "invalid",
            }],
            "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
        }, {}
    if status == 409:
        return {
            "message": f"Conflict merging main into {ref}.",
            "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
        }, {}
    if status == 422 and operation_id == "repos/delete-deployment":
        return {
            "message": "Validation Failed",
            "errors": ["We cannot delete an active deployment unless it is the only deployment in a given environment."],
            "documentation_url": "https://docs.github.com/rest/deployments/deployments#delete-a-deployment",
        }, {}
    if status == 422:
        return {
            "message": "Validation Failed",
            "errors": [{
                "resource": "Deployment",
                "code": "custom",
                "field": "environment",
                "message": "environment is not allowed to deploy to by the environment's protection rules",
            }],
            "documentation_url": DOCS,
        }, {}
    if status == 500:
        return {"message": "Server Error"}, {}
    if status == 502:
        return {"message": "Server Error"}, {}
    if status == 503:
        return {"message": "Service Unavailable", "documentation_url": DOCS}, {}
    if status == 504:
        return {
            "message": "We couldn't respond to your request in time. Sorry about that. "
                       "Please try resubmitting your request and contact us if the problem persists.",
        }, {}
    if status == 204 or status == 304:
        return None, {}
    return {"message": "Error", "documentation_url": DOCS}, {}
