#!/usr/bin/env python3
"""A fake GitHub REST API (deployments and deployment statuses) for deploy-action's tests.

Every request it receives and every response it sends is checked against GitHub's
official OpenAPI description; anything the description rejects is recorded as a
violation (``GET /_control/violations``) so that tests can fail on it.

    python3 tests/github-server/server.py --port 0 --port-file /tmp/gh.port \
        [--prefix /api/v3] [--token test-token] [--spec PATH]

See README.md beside this file for the control API and the modelled GitHub behaviour.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import FaultError, Faults, default_answer, public  # noqa: E402
from openapi_check import UNDECLARED_BUT_REAL, SpecChecker  # noqa: E402
from store import ApiError, Store, normalise_ref, not_found, parse_time  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "reference" / "github-rest-openapi-deployments.json"
# GET /repos/{owner}/{repo}/actions/runs/{run_id}, cut from the same description
# by scripts/stack/github-reference (it is not in the shared reference).
DEFAULT_EXTRA_SPEC = Path(os.environ.get("DEPLOY_ACTION_CACHE", "/var/cache/deploy-action")) / "github-openapi" / "23.0.2" / "actions-runs.json"
JSON_TYPE = "application/json; charset=utf-8"
RATE_LIMIT = 5000
MISSING_REPO = "missing"


def log(msg: str):
    print(f"[github-server] {msg}", file=sys.stderr, flush=True)


class App:
    """Everything the handler threads share.  ``lock`` guards all of it."""

    def __init__(self, checker: SpecChecker, prefix: str, token: str):
        self.checker = checker
        self.prefix = prefix
        self.token = token
        self.lock = threading.RLock()
        self.store = Store()
        self.faults = Faults()
        self.reset()

    def reset(self):
        self.store.reset()
        self.faults.clear()
        self.requests: list[dict] = []
        self.violations: list[dict] = []
        self.rate_used = 0
        self.rate_reset = int(time.time()) + 3600

    def violation(self, kind: str, method: str, path: str, route, problems: list[str], request_index: int, **extra):
        op = self.checker.operation(route, method) if route else None
        entry = {
            "kind": kind,
            "method": method,
            "path": path,
            "operation": op.get("operationId") if op else None,
            "problems": problems,
            "message": f"{kind} {method} {path}: " + "; ".join(problems),
            "time": time.time(),
            "request_index": request_index,
            **extra,
        }
        self.violations.append(entry)
        log(f"VIOLATION {entry['message']}")

    def rate_headers(self, resource: str = "core") -> dict:
        now = int(time.time())
        if now >= self.rate_reset:
            self.rate_used, self.rate_reset = 0, now + 3600
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(max(0, RATE_LIMIT - self.rate_used)),
            "x-ratelimit-reset": str(self.rate_reset),
            "x-ratelimit-used": str(self.rate_used),
            "x-ratelimit-resource": resource,
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: App  # set on the class by main()

    def version_string(self):
        return "GitHub.com"

    # Every method goes through _handle; the spec decides what is allowed.
    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format, *args):  # noqa: A002 - silence the default access log
        pass

    # ----------------------------------------------------------------- I/O

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _base_url(self) -> str:
        host = self.headers.get("host") or f"127.0.0.1:{self.server.server_address[1]}"
        return f"http://{host}{self.app.prefix}"

    def _send(self, status: int, body, headers: dict | None = None) -> tuple[bytes, dict]:
        """Serialise (returns what was sent so it can be validated first)."""
        if body is None:
            data = b""
        elif isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body, ensure_ascii=False).encode()
        hdrs = {
            "content-type": JSON_TYPE,
            "x-github-media-type": "github.v3; format=json",
            "x-github-api-version-selected": "2022-11-28",
            "x-github-request-id": uuid.uuid4().hex[:20].upper(),
        }
        hdrs.update(headers or {})
        if not data and status in (204, 304):
            hdrs.pop("content-type", None)
        return data, hdrs

    def _write(self, status: int, data: bytes, hdrs: dict):
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    # ------------------------------------------------------------- dispatch

    def _handle(self):
        t0 = time.time()
        app = self.app
        split = urlsplit(self.path)
        path, query_string = split.path, split.query
        query = parse_qsl(query_string, keep_blank_values=True)
        body = self._read_body()
        record = {
            "method": self.command,
            "path": path,
            "query": query_string,
            "query_params": {k: [v for kk, v in query if kk == k] for k, _ in query},
            "headers": {k: v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "time": t0,
        }
        control = path.startswith("/_control/") or (app.prefix and path.startswith(app.prefix + "/_control/"))
        if control:
            status, data, hdrs = self._control(path[path.index("/_control/"):], body)
        else:
            with app.lock:
                self._req_index = len(app.requests)
                app.requests.append(record)
            try:
                status, data, hdrs, delay = self._api(path, query, body)
            except Exception as exc:  # a bug in this server: never hide it
                import traceback
                traceback.print_exc()
                with app.lock:
                    app.violation("server-error", self.command, path, None, [f"{type(exc).__name__}: {exc}"],
                                  request_index=self._req_index)
                    status, delay = 500, 0.0
                    data, hdrs = self._send(500, {"message": "Server Error"}, app.rate_headers())
            if delay:
                time.sleep(delay)
            record["status"] = status
        self._write(status, data, hdrs)
        log(f"{self.command} {self.path} -> {status} ({(time.time() - t0) * 1000:.1f} ms)")

    def _api(self, path, query, body) -> tuple[int, bytes, dict, float]:
        app = self.app
        method = self.command
        delay = 0.0
        with app.lock:
            rate = app.rate_headers()
            if app.prefix:
                if not (path == app.prefix or path.startswith(app.prefix + "/")):
                    app.violation("request", method, path, None, [f"path is not under the API prefix {app.prefix}"],
                                  request_index=self._req_index)
                    data, hdrs = self._send(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, rate)
                    return 404, data, hdrs, 0.0
                api_path = path[len(app.prefix):] or "/"
            else:
                api_path = path
            route = app.checker.route(api_path)
            content_type = self.headers.get("content-type", "")
            if re.match(r"^application/vnd\.github[\w.-]*\+json\b", content_type, re.I):
                # GitHub's own JSON media types are JSON; the description only lists application/json.
                content_type = "application/json"
            problems = app.checker.check_request(method, api_path, query, dict(self.headers.items()), body, content_type)
            if problems:
                app.violation("request", method, path, route, problems, request_index=self._req_index)
                doc = app.checker.doc_url(route, method)
                answer = {
                    "message": "Invalid request.\n\n" + "\n".join(problems),
                    "errors": [{"resource": "Request", "code": "invalid", "message": p} for p in problems],
                    "documentation_url": doc,
                    "status": "422",
                }
                data, hdrs = self._send(422, answer, rate)
                return 422, data, hdrs, 0.0

            auth = self.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() not in ("bearer", "token") or given.strip() != app.token:
                status, answer, extra = 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}, {}
            else:
                if route is None or route.template != "/rate_limit":
                    app.rate_used += 1
                rate = app.rate_headers()
                status, answer, extra = None, None, {}
                fault = app.faults.take(method, api_path, body)
                if fault is not None:
                    delay = fault["delay_ms"] / 1000.0
                    log(f"fault #{fault['id']} matched {method} {api_path}")
                    if fault["status"] is not None:
                        status = fault["status"]
                        op = app.checker.operation(route, method) or {}
                        default_body, extra = default_answer(status, fault["kind"], body, time.time(), op.get("operationId"))
                        answer = default_body if fault["body"] is ... else fault["body"]
                        extra = {**extra, **fault["headers"]}
                if status is None:
                    try:
                        status, answer, extra = self._github(method, route, query, body)
                    except ApiError as err:
                        status, answer, extra = err.status, err.body, err.headers

            data, hdrs = self._send(status, answer, {**rate, **extra})
            problems = app.checker.check_response(method, api_path, query, status, hdrs, data, hdrs.get("content-type", ""))
            if problems:
                app.violation("response", method, path, route, problems, request_index=self._req_index, status=status)
            return status, data, hdrs, delay

    # ------------------------------------------------------------ GitHub API

    def _github(self, method, route, query, body) -> tuple[int, object, dict]:
        """The normal answer.  ``route`` is known and the request is spec-valid."""
        app, store, base = self.app, self.app.store, self._base_url()
        op = (route.template, method)
        p = route.params
        if route.template == "/rate_limit" and method == "GET":
            return 200, self._rate_limit_doc(), {}
        if "repo" in p and p["repo"].lower() == MISSING_REPO:
            raise not_found()
        doc = json.loads(body) if body else {}
        owner, repo = p.get("owner"), p.get("repo")
        deps = "/repos/{owner}/{repo}/deployments"
        one = deps + "/{deployment_id}"
        sts = one + "/statuses"

        if op == (deps, "POST"):
            d = store.create(owner, repo, doc)
            rendered = store.render(d, base)
            return 201, rendered, {"location": rendered["url"]}
        if op == (deps, "GET"):
            filters = {k: v for k, v in query if k in ("sha", "ref", "task", "environment")}
            items = store.list(owner, repo, filters)
            page, link = self._paginate(items, query)
            return 200, [store.render(d, base) for d in page], link
        if op == (one, "GET"):
            return 200, store.render(store.get(owner, repo, int(p["deployment_id"])), base), {}
        if op == (one, "DELETE"):
            store.delete(owner, repo, int(p["deployment_id"]))
            return 204, None, {}
        if op == (sts, "POST"):
            d = store.get(owner, repo, int(p["deployment_id"]))
            s = store.create_status(d, doc)
            rendered = store.render_status(d, s, base)
            return 201, rendered, {"location": rendered["url"]}
        if op == (sts, "GET"):
            d = store.get(owner, repo, int(p["deployment_id"]))
            page, link = self._paginate(store.statuses(d), query)
            return 200, [store.render_status(d, s, base) for s in page], link
        if op == (sts + "/{status_id}", "GET"):
            d = store.get(owner, repo, int(p["deployment_id"]))
            return 200, store.render_status(d, store.get_status(d, int(p["status_id"])), base), {}
        if op == ("/repos/{owner}/{repo}/commits/{ref}", "GET"):
            if not store.ref_exists(p["ref"]):
                raise ApiError(422, {
                    "message": f"No commit found for SHA: {p['ref']}",
                    "documentation_url": "https://docs.github.com/rest/commits/commits#get-a-commit",
                })
            return 200, store.commit(owner, repo, p["ref"], base), {}

        if op == ("/repos/{owner}/{repo}/actions/runs/{run_id}", "GET"):
            example = app.checker.spec["components"]["examples"]["workflow-run"]["value"]
            return 200, store.render_run(owner, repo, int(p["run_id"]), base, example), {}

        # In the description, but not faked here: loud, so a test notices.
        app.violation("unimplemented", method, self.path, route,
                      [f"{route.template} {method} is in the description but this test server does not implement it"],
                      request_index=self._req_index)
        raise not_found()

    def _paginate(self, items: list, query) -> tuple[list, dict]:
        q = dict(query)
        per_page = int(q.get("per_page") or 30)
        per_page = 30 if per_page < 1 else min(per_page, 100)
        page = max(1, int(q.get("page") or 1))
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        url = self._base_url() + urlsplit(self.path).path[len(self.app.prefix):]

        def link(n: int, rel: str) -> str:
            params = [(k, v) for k, v in query if k != "page"] + [("page", str(n))]
            return f'<{url}?{urlencode(params)}>; rel="{rel}"'

        rels = []
        if page > 1:
            rels.append(link(min(page - 1, last), "prev"))
        if page < last:
            rels += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            rels.append(link(1, "first"))
        return chunk, ({"link": ", ".join(rels)} if rels else {})

    def _rate_limit_doc(self) -> dict:
        app = self.app
        core = {"limit": RATE_LIMIT, "used": app.rate_used, "remaining": max(0, RATE_LIMIT - app.rate_used), "reset": app.rate_reset}

        def other(limit):
            return {"limit": limit, "used": 0, "remaining": limit, "reset": app.rate_reset}

        return {
            "resources": {
                "core": core,
                "search": other(30),
                "graphql": other(5000),
                "integration_manifest": other(5000),
                "code_search": other(10),
            },
            "rate": core,
        }

    # ---------------------------------------------------------- control API

    def _control(self, path: str, body: bytes) -> tuple[int, bytes, dict]:
        app = self.app
        method = self.command
        try:
            doc = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return self._control_answer(400, {"error": f"body is not JSON: {exc}"})
        with app.lock:
            base = self._base_url()
            if (method, path) == ("GET", "/_control/requests"):
                return self._control_answer(200, app.requests)
            if (method, path) == ("GET", "/_control/violations"):
                return self._control_answer(200, app.violations)
            if (method, path) == ("GET", "/_control/state"):
                return self._control_answer(200, self._state(base))
            if (method, path) == ("GET", "/_control/health"):
                return self._control_answer(200, {"ok": True, "prefix": app.prefix, "base_url": base})
            if (method, path) == ("POST", "/_control/reset"):
                app.reset()
                return self._control_answer(200, {"ok": True})
            if (method, path) == ("POST", "/_control/seed"):
                try:
                    return self._control_answer(200, self._seed(doc, base))
                except (ValueError, KeyError, TypeError) as exc:
                    return self._control_answer(400, {"error": f"bad seed: {exc}"})
            if (method, path) == ("POST", "/_control/faults"):
                try:
                    items = doc if isinstance(doc, list) else [doc]
                    added = [public(app.faults.add(item)) for item in items]
                except FaultError as exc:
                    return self._control_answer(400, {"error": str(exc)})
                return self._control_answer(200, added if isinstance(doc, list) else added[0])
            if (method, path) == ("POST", "/_control/runs"):
                try:
                    return self._control_answer(200, store_run(app, doc))
                except (ValueError, KeyError, TypeError) as exc:
                    return self._control_answer(400, {"error": f"bad run: {exc}"})
            if (method, path) == ("GET", "/_control/faults"):
                return self._control_answer(200, [public(f) for f in app.faults.items])
            if (method, path) == ("DELETE", "/_control/faults"):
                app.faults.clear()
                return self._control_answer(200, {"ok": True})
        return self._control_answer(404, {"error": f"no control endpoint {method} {path}"})

    def _control_answer(self, status: int, doc) -> tuple[int, bytes, dict]:
        data = json.dumps(doc, ensure_ascii=False, default=str).encode()
        return status, data, {"content-type": JSON_TYPE, **self.app.rate_headers()}

    def _state(self, base: str) -> dict:
        store = self.app.store
        out = []
        for d in sorted(store.deployments.values(), key=lambda x: (x["created_at"], x["id"])):
            rendered = store.render(d, base)
            latest = store.latest_status(d)
            rendered.update({
                "repository": f"{d['owner']}/{d['repo']}",
                "auto_merge": d["auto_merge"],
                "required_contexts": d["required_contexts"],
                "latest_state": latest["state"] if latest else None,
                "statuses": [store.render_status(d, s, base) for s in store.statuses(d)],
            })
            out.append(rendered)
        return {
            "deployments": out,
            "refs": store.refs,
            "faults": [public(f) for f in self.app.faults.items],
            "rate_limit": {"limit": RATE_LIMIT, "used": self.app.rate_used, "reset": self.app.rate_reset},
        }

    def _seed(self, doc: dict, base: str) -> dict:
        """Insert deployments/statuses/refs directly (no GitHub rules applied)."""
        store = self.app.store
        if not isinstance(doc, dict):
            raise ValueError("seed must be a JSON object")
        unknown = set(doc) - {"deployments", "refs"}
        if unknown:
            raise ValueError(f"unknown seed fields {sorted(unknown)}")
        for name, ref in (doc.get("refs") or {}).items():
            if set(ref) - {"sha", "merge", "statuses", "missing"}:
                raise ValueError(f"refs.{name}: allowed fields are sha, merge, statuses, missing")
            if ref.get("merge") not in (None, "behind", "conflict"):
                raise ValueError(f"refs.{name}.merge must be 'behind', 'conflict' or null")
            store.refs[normalise_ref(name)] = {
                "sha": ref.get("sha"), "merge": ref.get("merge"),
                "statuses": list(ref.get("statuses") or []), "missing": bool(ref.get("missing")),
            }
        created = []
        now = time.time()
        for i, item in enumerate(doc.get("deployments") or []):
            allowed = {"owner", "repo", "id", "ref", "sha", "task", "payload", "environment", "original_environment",
                       "description", "created_at", "transient_environment", "production_environment",
                       "creator", "statuses"}
            if set(item) - allowed:
                raise ValueError(f"deployments[{i}]: unknown fields {sorted(set(item) - allowed)}")
            created_at = parse_time(item.get("created_at"), now)
            owner, repo, ref = item["owner"], item["repo"], item.get("ref", "main")
            d = store.insert(
                owner, repo,
                ident=item.get("id"),
                ref=ref,
                sha=item.get("sha") or store.sha_for(owner, repo, ref),
                task=item.get("task", "deploy"),
                payload=item.get("payload", {}),
                environment=item.get("environment", "production"),
                original_environment=item.get("original_environment"),
                description=item.get("description", ""),
                transient_environment=item.get("transient_environment", False),
                production_environment=item.get("production_environment"),
                creator=item.get("creator"),
                created_at=created_at,
            )
            created.append(d)
            for j, s in enumerate(item.get("statuses") or []):
                extra = set(s) - {"id", "state", "description", "environment", "log_url", "environment_url",
                                  "creator", "created_at"}
                if extra:
                    raise ValueError(f"deployments[{i}].statuses[{j}]: unknown fields {sorted(extra)}")
                store.insert_status(
                    d,
                    ident=s.get("id"),
                    state=s["state"],
                    description=s.get("description", ""),
                    environment=s.get("environment"),
                    log_url=s.get("log_url", ""),
                    environment_url=s.get("environment_url", ""),
                    creator=s.get("creator"),
                    created_at=parse_time(s.get("created_at"), created_at + j + 1),
                )
        # Seeded objects must be ones GitHub could return: check them like responses.
        checker = self.app.checker
        for d in created:
            path = f"/repos/{d['owner']}/{d['repo']}/deployments/{d['id']}"
            problems = checker.check_response("GET", path, [], 200, {}, json.dumps(store.render(d, base)).encode(), JSON_TYPE)
            for s in d["statuses"]:
                problems += checker.check_response("GET", f"{path}/statuses/{s['id']}", [], 200, {},
                                                   json.dumps(store.render_status(d, s, base)).encode(), JSON_TYPE)
            if problems:
                for x in created:
                    store.deployments.pop(x["id"], None)
                raise ValueError(f"deployment {d['id']} would not be schema-valid: {'; '.join(problems)}")
        return {"deployments": [
            dict(store.render(d, base), statuses=[store.render_status(d, s, base) for s in store.statuses(d)])
            for d in created
        ]}


def store_run(app: App, doc) -> dict:
    """``POST /_control/runs``: what ``GET .../actions/runs/{id}`` answers for a run."""
    if not isinstance(doc, dict):
        raise ValueError("a run is a JSON object")
    return app.store.set_run(doc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only by default)")
    ap.add_argument("--prefix", default="", help="mount the API under this path, e.g. /api/v3 (GitHub Enterprise)")
    ap.add_argument("--token", default="test-token", help="the only token accepted (Bearer or token scheme)")
    ap.add_argument("--spec", action="append",
                    help="GitHub's OpenAPI description (JSON); given more than once, the cuts are merged "
                         f"(default: {DEFAULT_SPEC} and {DEFAULT_EXTRA_SPEC})")
    ap.add_argument("--allow-unknown-fields", action="store_true",
                    help="accept query parameters / body properties the description does not define "
                         "(GitHub ignores them; by default they are violations)")
    args = ap.parse_args(argv)

    prefix = args.prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        ap.error("--prefix must start with /")
    specs = args.spec or [str(DEFAULT_SPEC), str(DEFAULT_EXTRA_SPEC)]
    for spec in specs:
        if not Path(spec).is_file():
            hint = " (run scripts/stack/github-reference)" if spec == str(DEFAULT_EXTRA_SPEC) else ""
            ap.error(f"--spec {spec}: no such file{hint}")
    checker = SpecChecker(specs, allow_unknown=args.allow_unknown_fields)
    Handler.app = App(checker, prefix, args.token)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    log(f"listening on http://{args.host}:{port}{prefix} (spec {', '.join(specs)}); "
        f"undeclared-but-real statuses allowed: {sorted(UNDECLARED_BUT_REAL)}")
    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
