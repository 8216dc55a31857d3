#!/usr/bin/env python3
"""Self-test for the fake GitHub server: starts it (twice: at root and under /api/v3),
drives it over HTTP and exits non-zero on any failure.

    .stack/venv/bin/python tests/github-server/selftest.py [--spec PATH]

Uses the same interpreter for the server, so run it with the venv that has
requirements.txt installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAILURES: list[str] = []
PASSED = 0
TMP_DIRS: list[str] = []


def check(cond: bool, what: str, detail=""):
    global PASSED
    if cond:
        PASSED += 1
    else:
        FAILURES.append(f"{what} {detail}")
        print(f"FAIL: {what} {detail}", file=sys.stderr)


class Server:
    def __init__(self, spec: str | None, prefix: str = ""):
        self.tmp = tempfile.mkdtemp(prefix="gh-selftest-")
        TMP_DIRS.append(self.tmp)
        port_file = os.path.join(self.tmp, "port")
        cmd = [sys.executable, str(HERE / "server.py"), "--port", "0", "--port-file", port_file]
        if prefix:
            cmd += ["--prefix", prefix]
        if spec:
            cmd += ["--spec", spec]
        self.log = open(os.path.join(self.tmp, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, stderr=self.log, stdout=self.log)
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start; log: {open(self.log.name).read()}")
            time.sleep(0.05)
        self.port = int(open(port_file).read())
        self.root = f"http://127.0.0.1:{self.port}"
        self.api = self.root + prefix

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def call(self, method, path, body=None, headers=None, raw: bytes | None = None, base=None):
        url = (self.api if base is None else base) + path
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Accept": "application/vnd.github+json"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(AUTH if headers is None else headers)
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, rh, text = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, rh, text = err.code, err.headers, err.read()
        doc = json.loads(text) if text else None
        return status, doc, rh

    def control(self, method, path, body=None):
        status, doc, _ = self.call(method, "/_control/" + path, body, headers={}, base=self.root)
        assert status == 200, (method, path, status, doc)
        return doc

    def violations(self):
        return self.control("GET", "violations")

    def expect_clean(self, what):
        v = self.violations()
        check(v == [], f"{what}: no violations", json.dumps(v)[:800])

    def reset(self):
        self.control("POST", "reset")


def rate_headers_present(h, what):
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used", "x-ratelimit-resource"):
        check(h.get(name) is not None, f"{what}: header {name}")


def test_happy_path(s: Server):
    st, dep, h = s.call("POST", "/repos/octo/app/deployments", {
        "ref": "main", "environment": "staging", "payload": '{"image": "ghcr.io/octo/app:1"}',
        "description": "deploy 1", "auto_merge": False, "required_contexts": [],
    })
    check(st == 201, "create deployment 201", st)
    rate_headers_present(h, "create")
    check(h.get("content-type") == "application/json; charset=utf-8", "content-type", h.get("content-type"))
    check(len(dep["sha"]) == 40 and all(c in "0123456789abcdef" for c in dep["sha"]), "fake sha is 40 hex", dep["sha"])
    check(dep["payload"] == {"image": "ghcr.io/octo/app:1"}, "string payload returned as object", dep["payload"])
    check(dep["production_environment"] is False and dep["transient_environment"] is False, "env flags default")
    check(dep["task"] == "deploy" and dep["original_environment"] == "staging", "task/original_environment")
    check(dep["url"] == f"{s.api}/repos/octo/app/deployments/{dep['id']}", "url uses own base", dep["url"])
    check(dep["creator"]["login"] == "github-actions[bot]", "creator is a full user")
    did = dep["id"]

    st, prod, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "a" * 40, "required_contexts": []})
    check(st == 201 and prod["sha"] == "a" * 40 and prod["production_environment"] is True, "sha passthrough, production default")
    check(prod["environment"] == "production", "environment default production")

    st, s1, h = s.call("POST", f"/repos/octo/app/deployments/{did}/statuses", {"state": "in_progress", "log_url": "https://ci.example/run/1"})
    check(st == 201 and s1["state"] == "in_progress", "in_progress status 201", st)
    check(s1["target_url"] == "https://ci.example/run/1" and s1["environment"] == "staging", "log_url sets target_url; env inherited")
    check(h.get("location") == s1["url"], "Location header")
    st, s2, _ = s.call("POST", f"/repos/octo/app/deployments/{did}/statuses", {
        "state": "success", "environment_url": "https://staging.example", "description": "done"})
    check(st == 201 and s2["state"] == "success", "success status 201", st)

    st, lst, _ = s.call("GET", f"/repos/octo/app/deployments/{did}/statuses")
    check(st == 200 and [x["id"] for x in lst] == [s2["id"], s1["id"]], "statuses newest first", [x.get("id") for x in lst or []])
    st, one, _ = s.call("GET", f"/repos/octo/app/deployments/{did}/statuses/{s1['id']}")
    check(st == 200 and one["id"] == s1["id"], "get one status")
    st, _, _ = s.call("GET", f"/repos/octo/app/deployments/{did}/statuses/1")
    check(st == 404, "unknown status 404", st)

    st, lst, _ = s.call("GET", "/repos/octo/app/deployments?environment=staging")
    check(st == 200 and [d["id"] for d in lst] == [did], "list filter environment")
    st, lst, _ = s.call("GET", f"/repos/octo/app/deployments?sha={'a' * 40}")
    check(st == 200 and [d["id"] for d in lst] == [prod["id"]], "list filter sha")
    st, lst, _ = s.call("GET", "/repos/octo/app/deployments?task=other")
    check(st == 200 and lst == [], "list filter task")
    st, lst, h = s.call("GET", "/repos/octo/app/deployments?per_page=1")
    check(st == 200 and [d["id"] for d in lst] == [prod["id"]], "newest first, per_page", [d.get("id") for d in lst or []])
    link = h.get("link") or ""
    check('rel="next"' in link and 'rel="last"' in link and "page=2" in link and s.api in link, "Link header", link)
    st, lst, h = s.call("GET", "/repos/octo/app/deployments?per_page=1&page=2")
    check(st == 200 and [d["id"] for d in lst] == [did], "page 2")
    check('rel="prev"' in (h.get("link") or "") and 'rel="next"' not in (h.get("link") or ""), "Link on last page", h.get("link"))
    st, lst, h = s.call("GET", "/repos/octo/app/deployments")
    check(st == 200 and len(lst) == 2 and h.get("link") is None, "no Link when one page")

    st, got, _ = s.call("GET", f"/repos/octo/app/deployments/{did}")
    check(st == 200 and got["id"] == did, "get deployment")
    st, _, _ = s.call("GET", "/repos/octo/missing/deployments/1")
    check(st == 404, "repo 'missing' is 404", st)
    st, _, _ = s.call("GET", "/repos/octo/missing/deployments")
    check(st == 404, "repo 'missing' list is 404", st)

    st, rl, h = s.call("GET", "/rate_limit")
    check(st == 200 and "core" in rl["resources"], "rate_limit")
    st, c, _ = s.call("GET", "/repos/octo/app/commits/main")
    check(st == 200 and c["sha"] == dep["sha"], "commit sha matches deployment sha", (c or {}).get("sha"))
    st, c, _ = s.call("GET", "/repos/octo/app/commits/heads/main")
    check(st == 200 and c["sha"] == dep["sha"], "multi-segment ref", st)

    # Auth
    st, body, h = s.call("GET", "/repos/octo/app/deployments", headers={})
    check(st == 401 and body["message"] == "Bad credentials" and "documentation_url" in body, "no token -> 401", st)
    rate_headers_present(h, "401")
    st, body, _ = s.call("GET", "/repos/octo/app/deployments", headers={"Authorization": "Bearer wrong"})
    check(st == 401, "wrong token -> 401", st)
    st, _, _ = s.call("GET", "/repos/octo/app/deployments", headers={"Authorization": f"token {TOKEN}"})
    check(st == 200, "'token' scheme accepted", st)

    # Too long a description: GitHub's own 422, recorded as a problem too? no: it is GitHub behaviour.
    st, body, _ = s.call("POST", f"/repos/octo/app/deployments/{did}/statuses", {"state": "failure", "description": "x" * 141})
    check(st == 422 and body["errors"][0]["field"] == "description", "description > 140 -> 422", st)

    reqs = s.control("GET", "requests")
    check(any(r["headers"].get("Authorization") == f"Bearer {TOKEN}" for r in reqs), "requests keep raw Authorization")
    check(all({"method", "path", "query", "headers", "body", "time"} <= set(r) for r in reqs), "request record fields")
    s.expect_clean("valid traffic")
    state = s.control("GET", "state")
    check(len(state["deployments"]) == 2 and state["deployments"][0]["latest_state"] == "success", "control state")
    s.reset()
    check(s.control("GET", "state")["deployments"] == [] and s.control("GET", "requests") == [], "reset clears")


def test_bad_requests(s: Server):
    st, dep, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    did = dep["id"]
    cases = [
        ("POST", f"/repos/octo/app/deployments/{did}/statuses", {"state": "bogus"}, "bogus"),
        ("POST", "/repos/octo/app/deployments", {"ref": "main", "auto_merge": "no"}, "auto_merge"),
        ("POST", "/repos/octo/app/deployments", {"environment": "staging"}, "'ref' is a required property"),
        ("POST", "/repos/octo/app/deployments", {"ref": "main", "payload": 5}, "payload"),
        ("POST", "/repos/octo/app/deployments", {"ref": "main", "required_contexts": "ci"}, "required_contexts"),
        ("POST", f"/repos/octo/app/deployments/{did}/statuses", {"state": "success", "auto_inactive": "yes"}, "auto_inactive"),
        ("POST", f"/repos/octo/app/deployments/{did}/statuses", None, "body"),
        ("GET", "/repos/octo/app/deployments/abc", None, "deployment_id"),
        ("GET", "/repos/octo/app/deployments?per_page=lots", None, "per_page"),
        ("GET", "/repos/octo/app/nonsense", None, "no path"),
        ("PUT", "/repos/octo/app/deployments", None, "no PUT operation"),
        ("GET", "/repos/octo/app/deployments?enviroment=production", None, "'enviroment'"),
        ("POST", "/repos/octo/app/deployments", {"ref": "main", "transient": True}, "'transient'"),
    ]
    for method, path, body, needle in cases:
        before = len(s.violations())
        st, doc, _ = s.call(method, path, body)
        check(st == 422, f"bad {method} {path} {body} -> 422", st)
        v = s.violations()
        check(len(v) == before + 1 and v[-1]["kind"] == "request", f"bad {method} {path} recorded", json.dumps(v[-1:]))
        check(needle.lower() in (doc or {}).get("message", "").lower(), f"422 message names the problem ({needle})", (doc or {}).get("message"))
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", raw=b"{not json")
    check(st == 422 and s.violations()[-1]["kind"] == "request", "unparsable JSON is a violation")
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", raw=b'{"ref":"main"}', headers={**AUTH, "Content-Type": "text/plain"})
    check(st == 422, "wrong content-type is a violation", st)
    s.reset()
    st, _, _ = s.call("GET", "/repos/octo/app/environments/production")
    v = s.violations()
    check(st == 404 and len(v) == 1 and v[0]["kind"] == "unimplemented", "spec-valid but unimplemented is loud", json.dumps(v))
    s.reset()


def test_workflow_runs(s: Server):
    st, doc, _ = s.call("GET", "/repos/octo/app/actions/runs/777")
    check(st == 404 and s.violations() == [], "a run no test declared is 404, as GitHub answers", (st, doc))
    for body in ({"id": 777, "status": "completed"}, {"id": 777, "conclusion": "failure"}, {"id": 777, "colour": 1}):
        try:
            s.control("POST", "runs", body)
            check(False, f"bad run {body} refused")
        except Exception:
            check(True, f"bad run {body} refused")
    s.control("POST", "runs", {"id": 777, "status": "in_progress"})
    st, doc, _ = s.call("GET", "/repos/octo/app/actions/runs/777?exclude_pull_requests=true")
    check(st == 200 and doc["status"] == "in_progress" and doc["conclusion"] is None and doc["id"] == 777,
          "a declared run answers its status", (st, doc and {k: doc.get(k) for k in ("id", "status", "conclusion")}))
    s.control("POST", "runs", {"id": 777, "status": "completed", "conclusion": "cancelled", "run_attempt": 2})
    st, doc, _ = s.call("GET", "/repos/octo/app/actions/runs/777")
    check(st == 200 and (doc["status"], doc["conclusion"], doc["run_attempt"]) == ("completed", "cancelled", 2),
          "a completed run answers its conclusion and attempt", doc and (doc["status"], doc["conclusion"]))
    check(doc["url"].endswith("/repos/octo/app/actions/runs/777") and doc["url"].startswith(s.api), "the run's url is the server's", doc["url"])
    check(s.violations() == [], "run answers are valid per the description", json.dumps(s.violations()))
    st, _, _ = s.call("GET", "/repos/octo/app/actions/runs/777?exclude_pull_requests=maybe")
    check(st == 422, "a bad query on the run is a violation", st)
    s.reset()


def test_faults(s: Server):
    f = s.control("POST", "faults", {"method": "POST", "path": r"/deployments$", "status": 429, "headers": {"retry-after": "2"}, "times": 1})
    check(f["times"] == 1, "fault registered")
    st, body, h = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    check(st == 429 and h.get("retry-after") == "2" and "secondary rate limit" in body["message"], "429 fault with retry-after", (st, dict(h)))
    rate_headers_present(h, "fault")
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    check(st == 201, "normal behaviour after the fault", st)
    check(s.control("GET", "faults") == [], "fault used up")

    s.control("POST", "faults", [
        {"method": "POST", "path": r"/deployments$", "status": 409, "kind": "status_checks"},
        {"method": "POST", "path": r"/deployments$", "status": 202},
        {"method": "POST", "path": r"/deployments$", "status": 403, "kind": "secondary_rate_limit"},
        {"method": "POST", "path": r"/deployments$", "status": 422},
        {"method": "POST", "path": r"/statuses$", "status": 500},
        {"method": "GET", "path": r"/deployments$", "status": 502},
    ])
    st, body, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "topic-branch"})
    check(st == 409 and body["errors"][0]["contexts"][0]["state"] == "failure", "409 status checks body", body)
    st, body, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "topic-branch"})
    check(st == 202 and body == {"message": "Auto-merged main into topic-branch on deployment."}, "202 auto-merged", body)
    st, body, h = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    check(st == 403 and h.get("retry-after") and "secondary rate limit" in body["message"], "403 secondary rate limit")
    st, body, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    check(st == 422 and body["message"] == "Validation Failed" and body["errors"][0]["field"] == "environment", "422 validation")
    st, dep, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
    st, _, _ = s.call("POST", f"/repos/octo/app/deployments/{dep['id']}/statuses", {"state": "success"})
    check(st == 500, "500 on statuses", st)
    st, _, _ = s.call("GET", "/repos/octo/app/deployments")
    check(st == 502, "502 on list", st)
    s.control("POST", "faults", {"method": "DELETE", "path": r"/deployments/\d+$", "status": 422})
    st, body, _ = s.call("DELETE", f"/repos/octo/app/deployments/{dep['id']}")
    check(st == 422 and isinstance(body["errors"][0], str), "422 on delete uses the simple error shape", body)
    s.expect_clean("realistic faults (5xx/429/403 allowed although undeclared)")

    # Delay only, then the normal answer.
    s.control("POST", "faults", {"path": r"/deployments$", "method": "GET", "delay_ms": 300})
    t0 = time.time()
    st, _, _ = s.call("GET", "/repos/octo/app/deployments")
    check(st == 200 and time.time() - t0 >= 0.3, "delay fault", time.time() - t0)

    # A fault the description cannot express is a response violation: the test set it up wrong.
    s.control("POST", "faults", {"method": "GET", "path": r"/deployments/\d+$", "status": 409})
    st, _, _ = s.call("GET", f"/repos/octo/app/deployments/{dep['id']}")
    v = s.violations()
    check(st == 409 and len(v) == 1 and v[0]["kind"] == "response", "undeclared 409 on GET is a response violation", json.dumps(v))
    # A declared status with a body that breaks the schema is caught too (response validation works).
    s.reset()
    s.control("POST", "faults", {"method": "GET", "path": r"/deployments/\d+$", "status": 200, "body": {"id": "not-an-int"}})
    s.call("GET", "/repos/octo/app/deployments/1")
    v = s.violations()
    check(len(v) == 1 and v[0]["kind"] == "response" and v[0]["status"] == 200, "bad 200 body is a response violation", json.dumps(v))
    s.reset()
    st, body, _ = s.call("POST", "/_control/faults", {"status": 409, "kind": "nope"}, headers={}, base=s.root)
    check(st == 400, "bad fault rejected", st)


def test_github_rules(s: Server):
    # auto_inactive: non-production, non-transient earlier deployments in the same environment.
    def deploy(env, **kw):
        st, d, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main", "environment": env, **kw})
        assert st == 201, (st, d)
        return d["id"]

    def status(did, state, **kw):
        st, body, _ = s.call("POST", f"/repos/octo/app/deployments/{did}/statuses", {"state": state, **kw})
        assert st == 201, (st, body)

    def latest(did):
        _, lst, _ = s.call("GET", f"/repos/octo/app/deployments/{did}/statuses")
        return lst[0]["state"] if lst else None

    a = deploy("staging"); status(a, "success")
    t = deploy("staging", transient_environment=True); status(t, "success")
    f = deploy("staging"); status(f, "failure")
    o = deploy("qa"); status(o, "success")
    b = deploy("staging"); status(b, "success")
    check(latest(a) == "inactive", "earlier staging success auto-inactivated", latest(a))
    check(latest(t) == "success", "transient not auto-inactivated", latest(t))
    check(latest(f) == "failure", "non-success not auto-inactivated", latest(f))
    check(latest(o) == "success", "other environment untouched", latest(o))
    check(latest(b) == "success", "new one stays success")
    c = deploy("staging"); status(c, "success", auto_inactive=False)
    check(latest(b) == "success", "auto_inactive=false leaves earlier active", latest(b))

    p1 = deploy("production"); status(p1, "success")
    p2 = deploy("production"); status(p2, "success")
    check(latest(p1) == "success", "production deployments are NOT auto-inactivated", latest(p1))

    # Delete: active with siblings -> 422; inactive -> 204; only one in env -> 204.
    st, body, _ = s.call("DELETE", f"/repos/octo/app/deployments/{p1}")
    check(st == 422 and "active deployment" in body["errors"][0], "delete active -> 422", (st, body))
    status(p1, "inactive")
    st, _, _ = s.call("DELETE", f"/repos/octo/app/deployments/{p1}")
    check(st == 204, "delete inactive -> 204", st)
    st, _, _ = s.call("GET", f"/repos/octo/app/deployments/{p1}")
    check(st == 404, "deleted is gone", st)
    st, _, _ = s.call("DELETE", f"/repos/octo/app/deployments/{o}")
    check(st == 204, "only deployment in env deletable although active", st)

    # Status environment changes the deployment's environment.
    status(a, "in_progress", environment="staging-2")
    _, d, _ = s.call("GET", f"/repos/octo/app/deployments/{a}")
    check(d["environment"] == "staging-2" and d["original_environment"] == "staging", "status environment moves deployment")
    s.expect_clean("github rules")
    s.reset()

    # Seeded refs: behind -> 202 once, conflict -> 409, failing checks -> 409, [] bypasses, missing -> 422.
    s.control("POST", "seed", {"refs": {
        "behind": {"merge": "behind"},
        "conflict": {"merge": "conflict"},
        "red": {"statuses": [{"context": "ci/test", "state": "failure"}, {"context": "lint", "state": "success"}]},
        "gone": {"missing": True},
        "pinned": {"sha": "b" * 40},
    }})
    st, body, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "behind"})
    check(st == 202 and "Auto-merged main into behind" in body["message"], "behind -> 202", (st, body))
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "behind"})
    check(st == 201, "after auto-merge -> 201", st)
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "conflict"})
    check(st == 409, "conflict -> 409", st)
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "conflict", "auto_merge": False})
    check(st == 201, "conflict with auto_merge false -> 201", st)
    st, body, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "red"})
    check(st == 409 and body["errors"][0]["contexts"] == [{"context": "ci/test", "state": "failure"}], "failing checks -> 409", body)
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "red", "required_contexts": ["lint"]})
    check(st == 201, "only passing required context -> 201", st)
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "red", "required_contexts": []})
    check(st == 201, "required_contexts [] bypasses", st)
    st, _, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "gone"})
    check(st == 422, "missing ref -> 422", st)
    st, d, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "pinned", "payload": {"image": "x"}})
    check(st == 201 and d["sha"] == "b" * 40 and d["payload"] == {"image": "x"}, "pinned sha; object payload", d)
    s.expect_clean("seeded refs")
    s.reset()

    # Seeded history for rollback tests.
    seeded = s.control("POST", "seed", {"deployments": [{
        "owner": "octo", "repo": "app", "ref": "v1", "environment": "production",
        "payload": {"image": "ghcr.io/octo/app:v1"}, "created_at": "2024-01-01T00:00:00Z",
        "statuses": [{"state": "in_progress"}, {"state": "success", "environment_url": "https://app.example"}],
    }]})["deployments"][0]
    check(seeded["created_at"] == "2024-01-01T00:00:00Z" and seeded["statuses"][0]["state"] == "success", "seed", seeded)
    new = deploy("production")
    _, lst, _ = s.call("GET", "/repos/octo/app/deployments?environment=production")
    check([d["id"] for d in lst] == [new, seeded["id"]], "seeded older deployment listed after the new one")
    st, body, _ = s.call("POST", "/_control/seed", {"deployments": [{"owner": "o", "repo": "r", "payload": 5}]}, headers={}, base=s.root)
    check(st == 400 and "schema" in body["error"], "schema-invalid seed rejected", body)
    s.expect_clean("seed")
    s.reset()


def test_concurrency(s: Server):
    """Parallel action runs (lock tests) must get distinct deployments and no errors."""
    import threading
    results = []

    def worker(n):
        for i in range(5):
            st, d, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": f"r{n}-{i}", "environment": "staging"})
            results.append((st, d["id"] if d else None))
            if st == 201:
                s.call("POST", f"/repos/octo/app/deployments/{d['id']}/statuses", {"state": "success"})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check(all(st == 201 for st, _ in results) and len({i for _, i in results}) == 40, "40 concurrent creates", results[:5])
    _, lst, _ = s.call("GET", "/repos/octo/app/deployments?per_page=100")
    active = [d for d in lst if s.call("GET", f"/repos/octo/app/deployments/{d['id']}/statuses?per_page=1")[1][0]["state"] == "success"]
    # Only *earlier* deployments are inactivated, so with racing runs an older one whose
    # success landed last may stay active too; the newest one always does.
    check(lst[0]["id"] in {d["id"] for d in active} and len(active) < 40, "newest staging deployment stays active", len(active))
    s.expect_clean("concurrency")


def test_prefix(spec):
    s = Server(spec, prefix="/api/v3")
    try:
        st, dep, _ = s.call("POST", "/repos/octo/app/deployments", {"ref": "main"})
        check(st == 201 and dep["url"].startswith(f"{s.root}/api/v3/repos/"), "prefix: create + URLs", dep.get("url") if dep else st)
        st, _, _ = s.call("POST", f"/repos/octo/app/deployments/{dep['id']}/statuses", {"state": "success"})
        check(st == 201, "prefix: status", st)
        s.expect_clean("prefix run")
        st, _, _ = s.call("GET", "/repos/octo/app/deployments", base=s.root)
        v = s.violations()
        check(st == 404 and len(v) == 1 and "prefix" in v[0]["message"], "prefix: root request rejected + recorded", json.dumps(v))
        st, _, _ = s.call("GET", "/_control/state", headers={}, base=s.api)
        check(st == 200, "prefix: control also under the prefix", st)
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec")
    args = ap.parse_args()
    s = Server(args.spec)
    try:
        for test in (test_happy_path, test_bad_requests, test_workflow_runs, test_faults, test_github_rules, test_concurrency):
            try:
                test(s)
            except Exception as exc:  # keep going: report every failure
                import traceback
                traceback.print_exc()
                FAILURES.append(f"{test.__name__} crashed: {exc!r}")
            s.reset()
    finally:
        s.stop()
    test_prefix(args.spec)
    if FAILURES:
        print(f"server logs: {', '.join(TMP_DIRS)}", file=sys.stderr)
    else:
        for d in TMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
    print(f"selftest: {PASSED} passed, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
