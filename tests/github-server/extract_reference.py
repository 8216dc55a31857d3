#!/usr/bin/env python3
"""Cuts operations out of GitHub's full OpenAPI description, with every component
they reference, the way ``shared/reference/github-rest-openapi-deployments.json`` was
cut: nothing edited, everything else left out.

    extract_reference.py FULL.json OUT.json 'GET /repos/{owner}/{repo}/actions/runs/{run_id}' ...

FULL.json is ``generated/api.github.com.json`` of the npm package ``@octokit/openapi``
at the version the shared reference came from (scripts/stack/github-reference fetches
it). The test server loads the result beside the shared reference.
"""

from __future__ import annotations

import json
import sys


def refs(node, found: set[str]):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def lookup(spec: dict, ref: str):
    assert ref.startswith("#/components/"), ref
    _, _, kind, name = ref.split("/", 3)
    return kind, name.replace("~1", "/").replace("~0", "~"), spec["components"][kind][name]


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    full_path, out_path, ops = argv[1], argv[2], argv[3:]
    with open(full_path, encoding="utf-8") as fh:
        full = json.load(fh)
    out = {k: full[k] for k in ("openapi", "info", "servers")}
    out["paths"], out["components"] = {}, {}
    todo: set[str] = set()
    for op in ops:
        method, path = op.split(" ", 1)
        item = full["paths"][path]
        kept = {k: v for k, v in item.items() if k not in ("get", "put", "post", "patch", "delete", "head", "options", "trace")}
        kept[method.lower()] = item[method.lower()]
        out["paths"].setdefault(path, {}).update(kept)
        refs(kept, todo)
    done: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in done:
            continue
        done.add(ref)
        kind, name, value = lookup(full, ref)
        out["components"].setdefault(kind, {})[name] = value
        refs(value, todo)
    out["components"] = {k: dict(sorted(v.items())) for k, v in sorted(out["components"].items())}
    with open(out_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2, sort_keys=False)
        fh.write("\n")
    import os
    os.replace(out_path + ".tmp", out_path)
    print(f"{out_path}: {len(out['paths'])} path(s), {len(done)} component(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
