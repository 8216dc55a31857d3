//! `action.yml` is the schema of record: every declared input is parsed,
//! every parsed input is declared, and `docs/inputs.md` is generated from it
//! (`UPDATE_DOCS=1 cargo test --test it docs` regenerates it). The docs are
//! fixtures: the snippets users copy are read and checked here, every reason
//! code is in `docs/troubleshooting.md`, and every relative link resolves.

use std::collections::BTreeSet;

use crate::support::repo_root;

fn action() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("action.yml")).unwrap()).unwrap()
}

fn names(section: &str) -> Vec<String> {
    action()[section].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect()
}

#[test]
fn every_declared_input_is_parsed_and_every_parsed_input_is_declared() {
    let declared: BTreeSet<String> = names("inputs").into_iter().collect();
    let parsed: BTreeSet<String> =
        deploy_action::inputs::raw::declared_fields().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        declared.difference(&parsed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "declared in action.yml but not parsed"
    );
    assert_eq!(
        parsed.difference(&declared).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "parsed but not declared in action.yml"
    );
}

#[test]
fn every_input_reaches_the_parser_with_hyphens_kept() {
    // The runner turns `health-check-path` into INPUT_HEALTH-CHECK-PATH.
    let env = deploy_action::inputs::Env::from_pairs([
        ("INPUT_HEALTH-CHECK-PATH", "/healthz"),
        ("INPUT_REF", "hotfix"),
    ]);
    let (raw, _) = deploy_action::inputs::raw::read(&env).unwrap();
    assert_eq!(raw.health_check_path.as_deref(), Some("/healthz"));
    assert_eq!(raw.git_ref.as_deref(), Some("hotfix"));
}

/// Where each input applies: its target group (a section of
/// `docs/inputs.md`) and the strategies and modes it is used with. Every
/// input of `action.yml` must be here, so a new input says where it applies.
#[rustfmt::skip] // a table: one input a line
const APPLIES: &[(&str, Group, &str)] = &[
    ("target", All, "every strategy and mode"),
    ("mode", All, "`deploy`, `plan`, `rollback` everywhere; `promote` and `abort` with `target: kubernetes` and `strategy: canary` only"),
    ("image", All, "every strategy; none with `mode: promote` or `abort`, nor with `mode: rollback` on `kubernetes`"),
    ("app", All, EVERY),
    ("environment", All, EVERY),
    ("environment-url", All, EVERY),
    ("strategy", All, "`hosts`, `ec2`: `blue-green` (default), `rolling`, `canary`; `kubernetes`: `rolling` (default), `blue-green`, `canary`"),
    ("timeout", All, EVERY),
    ("services-file", All, "every strategy; `canary` takes one proxied service (`hosts`, `ec2`) or one entry (`kubernetes`)"),
    ("container-port", HostsEc2, EVERY),
    ("blue-port", HostsEc2, EVERY),
    ("green-port", HostsEc2, EVERY),
    ("env", HostsEc2, EVERY),
    ("command", HostsEc2, EVERY),
    ("restart-policy", HostsEc2, EVERY),
    ("migrate-command", All, DEPLOY),
    ("pre-migrate-command", All, DEPLOY),
    ("migrate-rollback-command", All, DEPLOY),
    ("migrate-timeout", All, DEPLOY),
    ("migration-timeout", All, "deprecated: read as `migrate-timeout`, with a warning"),
    ("health-check-path", HostsEc2, EVERY),
    ("health-check-timeout", HostsEc2, EVERY),
    ("health-check-interval", HostsEc2, EVERY),
    ("health-check-successes", HostsEc2, EVERY),
    ("health-check-max-latency", HostsEc2, EVERY),
    ("health-check-max-response-time", HostsEc2, "deprecated: read as `health-check-max-latency`, with a warning"),
    ("version-path", HostsEc2, EVERY),
    ("observe-window", All, "`hosts`, `ec2`: every strategy (each rolling batch, each canary step); `kubernetes`: `blue-green`"),
    ("observe-failures", HostsEc2, EVERY),
    ("max-error-rate", HostsEc2, "every strategy (refused on `kubernetes`)"),
    ("max-latency", HostsEc2, "every strategy (refused on `kubernetes`)"),
    ("min-requests", HostsEc2, EVERY),
    ("nginx-access-log", HostsEc2, EVERY),
    ("smoke-tests", All, "every strategy; `path` tests on `hosts` and `ec2` only, `preview-url` tests on `kubernetes` with `blue-green`"),
    ("drain-time", All, "`hosts`, `ec2`: every strategy; `kubernetes`: `blue-green`"),
    ("canary-steps", All, "`strategy: canary`; stopping short of 100 on `kubernetes` only"),
    ("canary-interval", All, "`strategy: canary`"),
    ("rollback-alarms", All, ANALYSIS),
    ("prometheus-url", All, ANALYSIS),
    ("analysis-query", All, ANALYSIS),
    ("analysis-max", All, ANALYSIS),
    ("analysis-min", All, ANALYSIS),
    ("analysis-interval", All, ANALYSIS),
    ("max-parallel", HostsEc2, "every strategy (the batch size of `rolling`)"),
    ("on-host-failure", HostsEc2, EVERY),
    ("hosts", Hosts, EVERY),
    ("ssh-user", HostsEc2, EVERY),
    ("ssh-port", HostsEc2, EVERY),
    ("ssh-private-key", HostsEc2, EVERY),
    ("ssh-private-key-ssm", HostsEc2, EVERY),
    ("ssh-known-hosts", HostsEc2, EVERY),
    ("ssh-known-hosts-ssm", HostsEc2, EVERY),
    ("ssh-timeout", HostsEc2, EVERY),
    ("ssh-jump-host", HostsEc2, EVERY),
    ("docker-socket", HostsEc2, EVERY),
    ("nginx-upstream-file", HostsEc2, EVERY),
    ("proxy-url", HostsEc2, EVERY),
    ("lock-dir", HostsEc2, EVERY),
    ("break-lock", HostsEc2, EVERY),
    ("registry-username", HostsEc2, EVERY),
    ("registry-password", HostsEc2, EVERY),
    ("registry-password-ssm", HostsEc2, EVERY),
    ("ec2-instance-ids", Ec2, EVERY),
    ("ec2-filters", Ec2, EVERY),
    ("ec2-address", Ec2, EVERY),
    ("ec2-connect", Ec2, EVERY),
    ("ec2-host-keys", Ec2, EVERY),
    ("ec2-instance-connect-endpoint-id", Ec2, EVERY),
    ("aws-region", All, "whenever AWS is called: `ec2`, the SSM inputs, `rollback-alarms`, `eks-cluster`"),
    ("kubeconfig", Kubernetes, EVERY),
    ("kube-context", Kubernetes, EVERY),
    ("namespace", Kubernetes, EVERY),
    ("deployments", Kubernetes, "every strategy; `canary` takes one"),
    ("eks-cluster", Kubernetes, EVERY),
    ("canary-traffic", Kubernetes, "`strategy: canary`"),
    ("manifests", Kubernetes, "`rolling` (refused with `blue-green` and `canary`)"),
    ("ssm-paths", All, EVERY),
    ("ssm-parameters", All, EVERY),
    ("github-token", All, EVERY),
    ("github-deployments", All, EVERY),
    ("deployment-id", All, EVERY),
    ("ref", All, EVERY),
    ("required-contexts", All, EVERY),
    ("production-environment", All, EVERY),
    ("transient-environment", All, EVERY),
    ("deactivate-previous", All, EVERY),
    ("lock-timeout", All, EVERY),
    ("fail-on-status-error", All, EVERY),
    ("slack-webhook-url", All, NOTIFY),
    ("slack-webhook-url-ssm", All, NOTIFY),
    ("notify-url", All, NOTIFY),
    ("notify-url-ssm", All, NOTIFY),
];
const EVERY: &str = "every strategy";
const DEPLOY: &str = "every strategy, `mode: deploy`";
const ANALYSIS: &str = "`mode: deploy`; `hosts`, `ec2`: every strategy; `kubernetes`: `blue-green`, `canary` (refused with `rolling`)";
const NOTIFY: &str = "every strategy and mode but `plan`";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    All,
    HostsEc2,
    Hosts,
    Ec2,
    Kubernetes,
}
use Group::*;

impl Group {
    const ORDER: [Group; 5] = [All, HostsEc2, Hosts, Ec2, Kubernetes];

    fn heading(self) -> &'static str {
        match self {
            All => "Every target",
            HostsEc2 => "`hosts` and `ec2`",
            Hosts => "`hosts`",
            Ec2 => "`ec2`",
            Kubernetes => "`kubernetes`",
        }
    }

    fn targets(self) -> &'static str {
        match self {
            All => "`hosts`, `ec2`, `kubernetes`",
            HostsEc2 => "`hosts`, `ec2`",
            Hosts => "`hosts`",
            Ec2 => "`ec2`",
            Kubernetes => "`kubernetes`",
        }
    }

    fn intro(self) -> &'static str {
        match self {
            All => {
                "The deploy itself, its GitHub record, secrets, what is watched after the switch, and notifications."
            }
            HostsEc2 => {
                "Servers reached over SSH, listed (`hosts`) or found through the EC2 API (`ec2`): the containers, health checks, nginx, SSH, Docker and the registry. See [Preparing hosts](hosts.md)."
            }
            Hosts => "The servers to deploy to.",
            Ec2 => "Finding the instances. See [EC2 and AWS permissions](aws.md).",
            Kubernetes => {
                "The cluster, the namespace and what to roll. See [Kubernetes](kubernetes.md). On `hosts` and `ec2` these are refused."
            }
        }
    }
}

/// One cell: newlines and pipes would break the table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `docs/inputs.md`, whole, from `action.yml` and [`APPLIES`].
fn inputs_page() -> String {
    let doc = action();
    let inputs = doc["inputs"].as_mapping().unwrap();
    let mut out = String::from(
        "<!-- Generated from action.yml by tests/it/docs.rs (`APPLIES` there says where each input applies).\n     \
         Do not edit: change action.yml or that table, then run `UPDATE_DOCS=1 cargo test --test it docs`. -->\n\
         # Inputs and outputs\n\n\
         [← README](../README.md) · [all pages](README.md)\n\n\
         Every input of [`action.yml`](../action.yml), grouped by the targets it applies to, with the\n\
         strategies and modes it is used with. Inputs are given under `with:`; all values are\n\
         strings. An input given on a target or strategy it does not apply to (another\n\
         target's, a canary setting with blue-green, a hosts' health check on a cluster) is\n\
         refused with a named problem before anything is contacted; the default the runner\n\
         passes for it is not.\n\n",
    );
    for g in Group::ORDER {
        out.push_str(&format!("- [{}](#{})\n", g.heading(), slug(g.heading())));
    }
    out.push_str("- [Outputs](#outputs)\n");
    for g in Group::ORDER {
        out.push_str(&format!(
            "\n## {}\n\n{}\n\n| input | default | applies to | description |\n|---|---|---|---|\n",
            g.heading(),
            g.intro()
        ));
        for (k, v) in inputs {
            let name = k.as_str().unwrap();
            let Some((_, group, how)) = APPLIES.iter().find(|(n, _, _)| *n == name) else { continue };
            if *group != g {
                continue;
            }
            let default = match (&v["default"], v["required"].as_bool()) {
                (serde_yaml::Value::String(d), _) => format!("`{d}`"),
                (_, Some(true)) => "**required**".into(),
                _ => String::new(),
            };
            let desc = cell(v["description"].as_str().unwrap_or(""));
            out.push_str(&format!("| `{name}` | {default} | {}; {} | {desc} |\n", g.targets(), cell(how)));
        }
    }
    out.push_str("\n## Outputs\n\nSet on every target (`hosts` is empty on `kubernetes`).\n\n| output | description |\n|---|---|\n");
    for (k, v) in doc["outputs"].as_mapping().unwrap() {
        let desc = cell(v["description"].as_str().unwrap_or(""));
        out.push_str(&format!("| `{}` | {desc} |\n", k.as_str().unwrap()));
    }
    out
}

#[test]
fn every_input_says_where_it_applies() {
    let declared: BTreeSet<String> = names("inputs").into_iter().collect();
    let listed: BTreeSet<String> = APPLIES.iter().map(|(n, _, _)| n.to_string()).collect();
    assert_eq!(
        declared.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "inputs of action.yml missing from APPLIES in tests/it/docs.rs"
    );
    assert_eq!(
        listed.difference(&declared).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "APPLIES in tests/it/docs.rs lists inputs action.yml does not declare"
    );
}

#[test]
fn the_inputs_page_matches_action_yml() {
    let path = repo_root().join("docs/inputs.md");
    let page = std::fs::read_to_string(&path).unwrap_or_default();
    let updated = inputs_page();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &updated).unwrap();
    } else {
        assert!(page == updated, "docs/inputs.md is stale: run `UPDATE_DOCS=1 cargo test --test it docs`");
    }
}

/// Every reason code the source can emit has an entry in the troubleshooting
/// page (`<a id="code">`), and every entry is a code the source emits. Codes
/// are the snake_case string literals of `src/` (outside `#[cfg(test)]`
/// and the `tests.rs` test modules);
/// the few such literals that are not codes are listed here.
#[test]
fn every_reason_code_in_the_source_is_in_the_troubleshooting_page() {
    const NOT_CODES: &[&str] = &["per_page", "endpoint_url", "run_url", "in_progress"];
    let page = crate::support::doc("docs/troubleshooting.md");
    let code = regex::Regex::new(r#""([a-z][a-z0-9]*(?:_[a-z0-9]+)+)""#).unwrap();
    let literal = regex::Regex::new(r#""([a-z][a-z0-9_]*)""#).unwrap();
    let entry = regex::Regex::new(r#"<a id="([a-z0-9_]+)"></a>"#).unwrap();
    let test_decl = regex::Regex::new(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*;").unwrap();
    let documented: BTreeSet<&str> = entry.captures_iter(&page).map(|c| c.get(1).unwrap().as_str()).collect();
    let mut missing = BTreeSet::new();
    let mut literals = BTreeSet::new();
    let mut stack = vec![repo_root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // A `tests.rs` is a test module (`#[cfg(test)] mod tests;`).
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // A test module declared (`#[cfg(test)] mod tests;`) hides
            // nothing; a test block (`mod tests { ... }`) ends the file.
            let text = test_decl.replace_all(&text, "");
            let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
            literals.extend(literal.captures_iter(shipped).map(|c| c[1].to_string()));
            for c in code.captures_iter(shipped) {
                let c = &c[1];
                if !NOT_CODES.contains(&c) && !documented.contains(c) {
                    missing.insert(format!("{c} ({})", path.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "reason codes without an entry in docs/troubleshooting.md: {missing:?}");
    let stale: Vec<&&str> = documented.iter().filter(|c| !literals.contains(**c)).collect();
    assert!(stale.is_empty(), "docs/troubleshooting.md documents codes the source never returns: {stale:?}");
}

/// The modules depend one way: `inputs` → `secrets` → `runner` → `redact`,
/// and in `github`, `client` → `errors`. (Cycles here once made every
/// change ripple both ways.)
#[test]
fn the_layers_point_one_way() {
    let read = |rel: &str| -> String {
        let path = repo_root().join(rel);
        if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            std::fs::read_to_string(path).unwrap()
        }
    };
    for (module, forbidden) in [
        ("src/secrets", &["crate::inputs"][..]),
        ("src/runner", &["crate::inputs", "crate::secrets"][..]),
        ("src/redact.rs", &["crate::inputs", "crate::secrets", "crate::runner"][..]),
        ("src/github/errors.rs", &["super::client", "github::client"][..]),
    ] {
        let text = read(module);
        for f in forbidden {
            assert!(!text.contains(f), "{module} must not depend on {f}");
        }
    }
}

/// The services file for a cluster in `docs/kubernetes.md` is a valid one:
/// its entries become the Deployments, Services and images it says.
#[test]
fn the_docs_kubernetes_services_file_parses_as_documented() {
    let section = crate::support::doc_section("docs/kubernetes.md", "## Blue-green");
    let file = crate::support::fenced_after(&section, "# deploy/services.yml, with `services-file");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yml"), &file).unwrap();
    let env = deploy_action::inputs::Env::from_pairs([
        ("INPUT_TARGET", "kubernetes"),
        ("INPUT_ENVIRONMENT", "production"),
        ("INPUT_STRATEGY", "blue-green"),
        ("INPUT_SERVICES-FILE", "services.yml"),
        ("INPUT_IMAGE", "ghcr.io/acme/dashboard:1"),
        ("INPUT_GITHUB-DEPLOYMENTS", "false"),
        ("GITHUB_WORKSPACE", dir.path().to_str().unwrap()),
        ("GITHUB_REPOSITORY", "acme/dashboard"),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
    ]);
    let inputs = deploy_action::inputs::load(&env).unwrap_or_else(|p| panic!("{p:?}"));
    let k = inputs.kubernetes.unwrap();
    let shown: Vec<String> = k
        .deployments
        .iter()
        .map(|d| {
            let role = if d.worker { " worker" } else { "" };
            format!("{} {} {:?} {:?}{role}", d.name, d.service_name(), d.preview, d.image)
        })
        .collect();
    assert_eq!(
        shown,
        [
            r#"api-server api Some("api-staging") Some("ghcr.io/acme/api:2.1.0")"#,
            r#"web web None Some("ghcr.io/acme/web:1.4.0")"#,
            "reports reports None None",
            "admin admin None None",
            "mailer mailer None None worker",
        ]
    );
}

/// The `smoke-tests` example of `docs/after-the-switch.md` is a valid list.
#[test]
fn the_docs_smoke_tests_parse() {
    let section = crate::support::doc_section("docs/after-the-switch.md", "## Smoke tests");
    let block: String = crate::support::fenced_after(&section, "smoke-tests: |\n")
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.get(12..).unwrap_or("")))
        .collect();
    let mut problems = vec![];
    let tests = deploy_action::inputs::smoke::parse(&block, &mut problems);
    assert!(problems.is_empty(), "{problems:?}\n{block}");
    assert_eq!(
        tests.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["home page", "orders API", "preview"]
    );
}

/// The rollback-triggers example of `docs/after-the-switch.md` is a valid
/// step: its `with:` inputs, given as the runner gives them, pass validation.
#[test]
fn the_docs_rollback_triggers_example_is_valid() {
    let page = crate::support::doc("docs/after-the-switch.md");
    let block =
        crate::support::fenced_after(&page, "# .github/workflows/deploy.yml (the production job's step)");
    let step: serde_yaml::Value =
        serde_yaml::from_str(&block.lines().skip(1).map(|l| format!("{}\n", &l[6..])).collect::<String>())
            .unwrap();
    let with = step[0]["with"].as_mapping().expect("with:").clone();
    let mut pairs: Vec<(String, String)> = with
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap().replace("${{ github.sha }}", "0123abc");
            // Expressions the runner fills in: stand-ins of the right shape.
            let v = if v.starts_with("${{ secrets.DEPLOY_SSH_KEY") || v.starts_with("${{ vars.") {
                "x".to_string()
            } else {
                v
            };
            let v = v.replace(
                "${{ secrets.SLACK_DEPLOYS_WEBHOOK }}",
                "https://hooks.slack.example/services/T0/B0/abcdefghijklmnop",
            );
            (format!("INPUT_{}", k.as_str().unwrap().to_uppercase()), v)
        })
        .collect();
    pairs.push(("GITHUB_REPOSITORY".into(), "acme/shop".into()));
    pairs.push(("GITHUB_SHA".into(), "0123456789abcdef0123456789abcdef01234567".into()));
    // action.yml's default, `${{ github.token }}`, as the runner fills it.
    pairs.push(("INPUT_GITHUB-TOKEN".into(), "ghs_example".into()));
    let inputs = deploy_action::inputs::load(&deploy_action::inputs::Env::from_pairs(pairs))
        .unwrap_or_else(|p| panic!("{p:?}"));
    let t = inputs.traffic.expect("traffic limits");
    assert_eq!(
        (t.limits.max_error_rate, t.limits.max_latency),
        (Some(0.1), Some(std::time::Duration::from_secs(5)))
    );
    assert_eq!(inputs.rollout.observe_window, std::time::Duration::from_secs(300));
    assert_eq!(inputs.smoke_tests.len(), 1);
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// turned into hyphens (`## Push to `main` → staging` is
/// `#push-to-main--staging`).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown page: its headings' (outside fenced blocks),
/// with GitHub's `-1`, `-2` for repeated ones, and `<a id="...">`.
fn anchors(page: &str) -> BTreeSet<String> {
    let html = regex::Regex::new(r#"<a (?:id|name)="([^"]+)""#).unwrap();
    let mut out: BTreeSet<String> = html.captures_iter(page).map(|c| c[1].to_string()).collect();
    let mut fenced = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut anchor = base.clone();
        for n in 1.. {
            if out.insert(anchor.clone()) {
                break;
            }
            anchor = format!("{base}-{n}");
        }
    }
    out
}

/// The pages a reader goes through: README.md, CONTRIBUTING.md, docs/*.md.
fn doc_pages() -> Vec<std::path::PathBuf> {
    let mut pages = vec![repo_root().join("README.md"), repo_root().join("CONTRIBUTING.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Every relative link of the docs points at a file that exists, and at a
/// heading of it when it names one (`page.md#anchor`, `#anchor`).
#[test]
fn every_relative_link_in_the_docs_resolves() {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    for page in doc_pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut fenced = false;
        let prose: String = text
            .lines()
            .filter(|l| {
                if l.trim_start().starts_with("```") {
                    fenced = !fenced;
                    return false;
                }
                !fenced
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let name = page.strip_prefix(repo_root()).unwrap().display().to_string();
        for c in link.captures_iter(&prose) {
            let target = &c[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
            let path = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            if !path.exists() {
                broken.push(format!("{name}: {target} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor
                && path.extension().is_some_and(|x| x == "md")
                && !anchors(&std::fs::read_to_string(&path).unwrap()).contains(anchor)
            {
                broken.push(format!("{name}: {target} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README's quick-start workflows are inputs the action accepts, as
/// the runner would give them (expressions replaced by stand-ins).
#[test]
fn the_readme_quick_start_workflows_are_valid_inputs() {
    let section = crate::support::doc_section("README.md", "## Quick start");
    let blocks = crate::analysis::yaml_blocks(&section);
    let mut targets = Vec::new();
    for block in &blocks {
        // `${{ ... }}` is the runner's to fill in: a stand-in of the right shape.
        let inputs = crate::analysis::snippet_inputs(block, |k, _| match k {
            "image" => "ghcr.io/acme/shop:1.2.3".to_string(),
            _ => "x".to_string(),
        });
        targets.push(format!("{:?}", inputs.target));
    }
    assert_eq!(targets.len(), 4, "{targets:?}");
}
