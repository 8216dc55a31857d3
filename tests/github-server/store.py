"""In-memory GitHub deployments and deployment statuses, with GitHub's rules.

Plain data plus the behaviour GitHub applies on top of it; no HTTP here.  Every public
method is called with the server's lock held.

Modelled GitHub behaviour (see README.md for the full list):

* ``production_environment`` defaults to true iff ``environment == "production"``;
  ``transient_environment`` to false; ``task`` to ``deploy``; ``payload`` to ``{}``;
  a JSON string payload that holds an object is returned as that object.
* ``sha``: a 40-hex ``ref`` is its own sha; a seeded ref has its seeded sha; anything
  else gets a deterministic fake sha (sha1 of ``owner/repo@ref``, ref with
  ``refs/heads/`` etc. stripped), the same one ``GET /commits/{ref}`` reports.
* ``auto_merge`` (default true) and ``required_contexts`` act on seeded refs:
  a ref seeded ``merge: "behind"`` answers 202 "Auto-merged ..." (no deployment is
  created; the ref is up to date afterwards), ``merge: "conflict"`` answers 409; with
  ``auto_merge: false`` both are ignored.  Seeded commit statuses that are not
  ``success`` (or required contexts that have no status at all) answer 409
  "Conflict: Commit status checks failed ..." unless ``required_contexts`` is ``[]``.
* A ``success`` status with ``auto_inactive`` (default true) adds an ``inactive`` status
  to every *earlier* deployment of the same repository and environment that is
  non-transient, **non-production** and whose latest status is ``success``.
  Production deployments are never auto-inactivated.
* A status's ``environment`` defaults to the previous status's, else the deployment's;
  giving one changes the deployment's ``environment`` (``original_environment`` stays).
* ``log_url`` sets ``target_url`` too (and vice versa when only ``target_url`` is given).
* Deleting: allowed when the deployment is the only one in its environment or is not
  active (active = latest status is ``success``); else 422 like GitHub.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
from datetime import datetime, timezone

HEX40 = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_BRANCH = "main"
DEPLOYMENT_ID_START = 3_000_000_001  # above 2^31, as GitHub's ids are: catches i32 bugs
STATUS_ID_START = 9_000_000_001
RUN_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
RUN_CONCLUSIONS = (None, "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required")
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


class ApiError(Exception):
    """An answer other than the normal one: status + GitHub-shaped body."""

    def __init__(self, status: int, body: dict | None, headers: dict | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def normalise_ref(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/", "heads/", "tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0:{kind}{ident}".encode()).decode().rstrip("=")


def user(base: str, login: str | None = None) -> dict:
    """A full simple-user object; URLs point at this server.  No login means the
    ``github-actions[bot]`` user that GITHUB_TOKEN requests are made as."""
    if login is None or login == "github-actions[bot]":
        login, ident, kind = "github-actions[bot]", 41898282, "Bot"
    else:
        ident, kind = int(hashlib.sha1(login.encode()).hexdigest()[:7], 16), "User"
    enc = login.replace("[", "%5B").replace("]", "%5D")
    api = f"{base}/users/{enc}"
    html = f"https://github.com/apps/{login[:-5]}" if login.endswith("[bot]") else f"https://github.com/{login}"
    return {
        "login": login,
        "id": ident,
        "node_id": node_id("User", ident),
        "avatar_url": f"https://avatars.githubusercontent.com/in/{ident}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": html,
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def actions_app(base: str) -> dict:
    """The "GitHub Actions" app that performs GITHUB_TOKEN requests."""
    return {
        "id": 15368,
        "slug": "github-actions",
        "client_id": "Iv1.05c79e9ad1f6bdfa",
        "node_id": "MDM6QXBwMTUzNjg=",
        "owner": dict(user(base, "github"), id=9919, node_id=node_id("Organization", 9919), type="Organization"),
        "name": "GitHub Actions",
        "description": "Automate your workflow from idea to production",
        "external_url": "https://help.github.com/en/actions",
        "html_url": "https://github.com/apps/github-actions",
        "created_at": "2018-07-30T09:30:17Z",
        "updated_at": "2024-04-10T20:33:16Z",
        "permissions": {"deployments": "write", "metadata": "read", "statuses": "write"},
        "events": ["deployment", "deployment_status"],
    }


def not_found() -> ApiError:
    return ApiError(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})


class Store:
    def __init__(self):
        self.reset()

    def reset(self):
        self.deployments: dict[int, dict] = {}
        self.refs: dict[str, dict] = {}  # normalised ref -> {"sha", "merge", "statuses", "missing"}
        self.next_deployment_id = DEPLOYMENT_ID_START
        self.next_status_id = STATUS_ID_START
        self.runs: dict[int, dict] = {}  # run id -> {"status", "conclusion", "run_attempt"}

    # ------------------------------------------------------------------ refs

    def sha_for(self, owner: str, repo: str, ref: str) -> str:
        if HEX40.match(ref):
            return ref
        seeded = self.refs.get(normalise_ref(ref))
        if seeded and seeded.get("sha"):
            return seeded["sha"]
        key = f"{owner.lower()}/{repo.lower()}@{normalise_ref(ref)}"
        return hashlib.sha1(key.encode()).hexdigest()

    def ref_exists(self, ref: str) -> bool:
        return not self.refs.get(normalise_ref(ref), {}).get("missing", False)

    # ----------------------------------------------------------- deployments

    def _repo_deployments(self, owner: str, repo: str) -> list[dict]:
        key = (owner.lower(), repo.lower())
        return [d for d in self.deployments.values() if (d["owner"].lower(), d["repo"].lower()) == key]

    @staticmethod
    def _newest_first(items: list[dict]) -> list[dict]:
        return sorted(items, key=lambda x: (x["created_at"], x["id"]), reverse=True)

    def get(self, owner: str, repo: str, deployment_id: int) -> dict:
        d = self.deployments.get(deployment_id)
        if d is None or (d["owner"].lower(), d["repo"].lower()) != (owner.lower(), repo.lower()):
            raise not_found()
        return d

    def list(self, owner: str, repo: str, filters: dict) -> list[dict]:
        out = []
        for d in self._repo_deployments(owner, repo):
            if any(name in filters and d[name] != filters[name] for name in ("sha", "ref", "task", "environment")):
                continue
            out.append(d)
        return self._newest_first(out)

    def create(self, owner: str, repo: str, body: dict, creator: str | None = None, now: float | None = None) -> dict:
        """POST /deployments.  Raises ApiError for GitHub's 202/409/422 answers."""
        ref = body["ref"]
        seeded = self.refs.get(normalise_ref(ref), {})
        if seeded.get("missing"):
            raise ApiError(422, {
                "message": f"No ref found for: {ref}",
                "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
            })
        auto_merge = body.get("auto_merge", True)
        merge = seeded.get("merge")
        if auto_merge and merge == "conflict":
            raise ApiError(409, {
                "message": f"Conflict merging {DEFAULT_BRANCH} into {ref}.",
                "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
            })
        if auto_merge and merge == "behind":
            seeded["merge"] = None  # merged now; the next attempt deploys
            raise ApiError(202, {"message": f"Auto-merged {DEFAULT_BRANCH} into {ref} on deployment."})
        required = body.get("required_contexts")
        statuses = {s["context"]: s.get("state", "success") for s in seeded.get("statuses", [])}
        contexts = list(statuses) if required is None else required
        failing = [
            {"context": c, "state": statuses.get(c, "missing")}
            for c in contexts
            if statuses.get(c) != "success"
        ]
        if failing:
            raise ApiError(409, {
                "message": f"Conflict: Commit status checks failed for {ref}.",
                "errors": [{"contexts": failing, "resource": "Deployment", "field": "required_contexts", "code": "invalid"}],
                "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
            })

        payload = body.get("payload", {})
        if isinstance(payload, str):
            try:
                parsed = json.loads(payload) if payload.strip() else {}
            except ValueError:
                parsed = payload
            payload = parsed if isinstance(parsed, dict) else payload
        environment = body.get("environment", "production")
        return self.insert(
            owner, repo,
            ref=ref,
            sha=self.sha_for(owner, repo, ref),
            task=body.get("task", "deploy"),
            payload=payload,
            environment=environment,
            description=body.get("description", ""),
            transient_environment=body.get("transient_environment", False),
            production_environment=body.get("production_environment", environment == "production"),
            auto_merge=auto_merge,
            required_contexts=required,
            creator=creator,
            created_at=now,
        )

    def insert(self, owner, repo, *, ref, sha, task="deploy", payload=None, environment="production",
               description="", transient_environment=False, production_environment=None,
               auto_merge=True, required_contexts=None, creator=None, created_at=None, ident=None,
               original_environment=None) -> dict:
        now = time.time() if created_at is None else created_at
        if ident is None:
            ident = self.next_deployment_id
        if ident in self.deployments:
            raise ValueError(f"deployment id {ident} already exists")
        self.next_deployment_id = max(self.next_deployment_id, ident + 1)
        d = {
            "id": ident,
            "owner": owner,
            "repo": repo,
            "ref": ref,
            "sha": sha,
            "task": task,
            "payload": {} if payload is None else payload,
            "original_environment": original_environment or environment,
            "environment": environment,
            "description": description,
            "transient_environment": transient_environment,
            "production_environment": (environment == "production") if production_environment is None else production_environment,
            "auto_merge": auto_merge,
            "required_contexts": required_contexts,
            "creator": creator,
            "created_at": now,
            "updated_at": now,
            "statuses": [],
        }
        self.deployments[ident] = d
        return d

    def delete(self, owner: str, repo: str, deployment_id: int):
        d = self.get(owner, repo, deployment_id)
        same_env = [x for x in self._repo_deployments(owner, repo) if x["environment"] == d["environment"]]
        latest = self.latest_status(d)
        if latest is not None and latest["state"] == "success" and len(same_env) > 1:
            raise ApiError(422, {
                "message": "Validation Failed",
                "errors": ["We cannot delete an active deployment unless it is the only deployment in a given environment."],
                "documentation_url": "https://docs.github.com/rest/deployments/deployments#delete-a-deployment",
            })
        del self.deployments[deployment_id]

    # -------------------------------------------------------------- statuses

    def latest_status(self, d: dict) -> dict | None:
        ordered = self._newest_first(d["statuses"])
        return ordered[0] if ordered else None

    def statuses(self, d: dict) -> list[dict]:
        return self._newest_first(d["statuses"])

    def get_status(self, d: dict, status_id: int) -> dict:
        for s in d["statuses"]:
            if s["id"] == status_id:
                return s
        raise not_found()

    def create_status(self, d: dict, body: dict, creator: str | None = None, now: float | None = None) -> dict:
        """POST /statuses.  Raises ApiError(422) for GitHub's own checks."""
        description = body.get("description", "")
        if description is not None and len(description) > 140:
            raise ApiError(422, {
                "message": "Validation Failed",
                "errors": [{
                    "resource": "DeploymentStatus",
                    "code": "custom",
                    "field": "description",
                    "message": "description is too long (maximum is 140 characters)",
                }],
                "documentation_url": "https://docs.github.com/rest/deployments/statuses#create-a-deployment-status",
            })
        latest = self.latest_status(d)
        if "environment" in body:
            environment = body["environment"]
            d["environment"] = environment
        elif latest is not None:
            environment = latest["environment"]
        else:
            environment = d["environment"]
        log_url = body.get("log_url") or body.get("target_url") or ""
        s = self.insert_status(
            d,
            state=body["state"],
            description=description,
            environment=environment,
            log_url=log_url,
            environment_url=body.get("environment_url", ""),
            creator=creator,
            created_at=now,
        )
        if s["state"] == "success" and body.get("auto_inactive", True):
            self._auto_inactivate(d, creator, s["created_at"])
        return s

    def insert_status(self, d: dict, *, state, description="", environment=None, log_url="",
                      environment_url="", creator=None, created_at=None, ident=None) -> dict:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = time.time() if created_at is None else created_at
        if ident is None:
            ident = self.next_status_id
        self.next_status_id = max(self.next_status_id, ident + 1)
        s = {
            "id": ident,
            "state": state,
            "description": description,
            "environment": environment if environment is not None else d["environment"],
            "log_url": log_url or "",
            "environment_url": environment_url or "",
            "creator": creator,
            "created_at": now,
            "updated_at": now,
        }
        d["statuses"].append(s)
        d["updated_at"] = max(d["updated_at"], now)
        return s

    def _auto_inactivate(self, current: dict, creator, now):
        """GitHub's auto_inactive: earlier non-production, non-transient deployments of the
        same repo and environment whose latest status is success get an inactive status."""
        for d in self._repo_deployments(current["owner"], current["repo"]):
            if d is current or d["environment"] != current["environment"]:
                continue
            if (d["created_at"], d["id"]) >= (current["created_at"], current["id"]):
                continue  # only *prior* deployments
            if d["production_environment"] or d["transient_environment"]:
                continue
            latest = self.latest_status(d)
            if latest is None or latest["state"] != "success":
                continue
            self.insert_status(d, state="inactive", description="", environment=d["environment"],
                               creator=creator, created_at=now)

    # ------------------------------------------------------------- rendering

    def render(self, d: dict, base: str) -> dict:
        repo_url = f"{base}/repos/{d['owner']}/{d['repo']}"
        url = f"{repo_url}/deployments/{d['id']}"
        return {
            "url": url,
            "id": d["id"],
            "node_id": node_id("Deployment", d["id"]),
            "sha": d["sha"],
            "ref": d["ref"],
            "task": d["task"],
            "payload": d["payload"],
            "original_environment": d["original_environment"],
            "environment": d["environment"],
            "description": d["description"],
            "creator": user(base, d["creator"]),
            "created_at": iso(d["created_at"]),
            "updated_at": iso(d["updated_at"]),
            "statuses_url": f"{url}/statuses",
            "repository_url": repo_url,
            "transient_environment": d["transient_environment"],
            "production_environment": d["production_environment"],
            "performed_via_github_app": actions_app(base),
        }

    def render_status(self, d: dict, s: dict, base: str) -> dict:
        repo_url = f"{base}/repos/{d['owner']}/{d['repo']}"
        dep_url = f"{repo_url}/deployments/{d['id']}"
        return {
            "url": f"{dep_url}/statuses/{s['id']}",
            "id": s["id"],
            "node_id": node_id("DeploymentStatus", s["id"]),
            "state": s["state"],
            "creator": user(base, s["creator"]),
            "description": s["description"],
            "environment": s["environment"],
            "target_url": s["log_url"],
            "created_at": iso(s["created_at"]),
            "updated_at": iso(s["updated_at"]),
            "deployment_url": dep_url,
            "repository_url": repo_url,
            "environment_url": s["environment_url"],
            "log_url": s["log_url"],
            "performed_via_github_app": actions_app(base),
        }

    def commit(self, owner: str, repo: str, ref: str, base: str) -> dict:
        """A minimal but schema-valid commit object for GET /commits/{ref}."""
        sha = self.sha_for(owner, repo, ref)
        repo_url = f"{base}/repos/{owner}/{repo}"
        git_user = {"name": "GitHub Actions", "email": "actions@github.com", "date": "2024-01-01T00:00:00Z"}
        return {
            "url": f"{repo_url}/commits/{sha}",
            "sha": sha,
            "node_id": node_id("Commit", int(sha[:8], 16)),
            "html_url": f"https://github.com/{owner}/{repo}/commit/{sha}",
            "comments_url": f"{repo_url}/commits/{sha}/comments",
            "commit": {
                "url": f"{repo_url}/git/commits/{sha}",
                "author": git_user,
                "committer": git_user,
                "message": f"Commit for {ref}",
                "tree": {"sha": hashlib.sha1(("tree:" + sha).encode()).hexdigest(), "url": f"{repo_url}/git/trees/{sha}"},
                "comment_count": 0,
                "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None, "verified_at": None},
            },
            "author": user(base),
            "committer": user(base),
            "parents": [],
            "stats": {"total": 0, "additions": 0, "deletions": 0},
            "files": [],
        }

    # ---------------------------------------------------------- workflow runs

    def set_run(self, doc: dict) -> dict:
        allowed = {"id", "status", "conclusion", "run_attempt"}
        if set(doc) - allowed:
            raise ValueError(f"unknown fields {sorted(set(doc) - allowed)}; allowed: {sorted(allowed)}")
        run_id = int(doc["id"])
        status = doc.get("status", "in_progress")
        conclusion = doc.get("conclusion")
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}")
        if conclusion not in RUN_CONCLUSIONS or (conclusion is None) == (status == "completed"):
            raise ValueError("a completed run has a conclusion, any other none")
        self.runs[run_id] = {"status": status, "conclusion": conclusion, "run_attempt": int(doc.get("run_attempt", 1)),
                             "updated_at": time.time()}
        return {"id": run_id, **self.runs[run_id]}


    def render_run(self, owner: str, repo: str, run_id: int, base: str, example: dict) -> dict:
        """GitHub's example workflow run (from the description) made this run: its id,
        repository, URLs, status and conclusion. A run no test declared is 404, as a
        run GitHub does not know."""
        run = self.runs.get(run_id)
        if run is None:
            raise not_found()
        out = copy.deepcopy(example)
        api = f"{base}/repos/{owner}/{repo}/actions/runs/{run_id}"
        out.update({
            "id": run_id,
            "status": run["status"],
            "conclusion": run["conclusion"],
            "run_attempt": run["run_attempt"],
            "url": api,
            "html_url": f"https://github.com/{owner}/{repo}/actions/runs/{run_id}",
            "jobs_url": f"{api}/jobs",
            "logs_url": f"{api}/logs",
            "artifacts_url": f"{api}/artifacts",
            "cancel_url": f"{api}/cancel",
            "rerun_url": f"{api}/rerun",
            "updated_at": iso(run["updated_at"]),
        })
        if run["run_attempt"] > 1:
            out["previous_attempt_url"] = f"{api}/attempts/{run['run_attempt'] - 1}"
        else:
            out["previous_attempt_url"] = None
        return out
