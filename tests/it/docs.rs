//! `action.yml` is the schema of record: every declared input is parsed,
//! every parsed input is declared, and the README's tables are generated
//! from it (`UPDATE_DOCS=1 cargo test --test it docs` regenerates them).

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

fn table(section: &str) -> String {
    let doc = action();
    let mut out = match section {
        "inputs" => "| input | default | description |\n|---|---|---|\n".to_string(),
        _ => "| output | description |\n|---|---|\n".to_string(),
    };
    for (k, v) in doc[section].as_mapping().unwrap() {
        let desc = v["description"].as_str().unwrap_or("").replace('|', "\\|").replace('\n', " ");
        let name = k.as_str().unwrap();
        if section == "inputs" {
            let default = match (&v["default"], v["required"].as_bool()) {
                (serde_yaml::Value::String(d), _) => format!("`{d}`"),
                (_, Some(true)) => "**required**".into(),
                _ => String::new(),
            };
            out.push_str(&format!("| `{name}` | {default} | {desc} |\n"));
        } else {
            out.push_str(&format!("| `{name}` | {desc} |\n"));
        }
    }
    out
}

#[test]
fn readme_tables_match_action_yml() {
    let path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let mut updated = readme.clone();
    for section in ["inputs", "outputs"] {
        let (start, end) = (format!("<!-- {section}:start -->\n"), format!("<!-- {section}:end -->"));
        let a = updated.find(&start).unwrap_or_else(|| panic!("README lacks {start}")) + start.len();
        let b = updated.find(&end).unwrap_or_else(|| panic!("README lacks {end}"));
        updated.replace_range(a..b, &table(section));
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &updated).unwrap();
    } else {
        assert!(readme == updated, "README tables are stale: run `UPDATE_DOCS=1 cargo test --test it docs`");
    }
}

/// Every reason code the source can emit is in the README's table. Codes
/// are the snake_case string literals of `src/` (outside `#[cfg(test)]`
/// and the `tests.rs` test modules);
/// the few such literals that are not codes are listed here.
#[test]
fn every_reason_code_in_the_source_is_in_the_readme() {
    const NOT_CODES: &[&str] = &["per_page", "endpoint_url", "run_url"];
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let code = regex::Regex::new(r#""([a-z]+(?:_[a-z0-9]+)+)""#).unwrap();
    let mut missing = BTreeSet::new();
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
            let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
            for c in code.captures_iter(shipped) {
                let c = &c[1];
                if !NOT_CODES.contains(&c) && !readme.contains(&format!("`{c}`")) {
                    missing.insert(format!("{c} ({})", path.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "reason codes missing from the README's table: {missing:?}");
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

/// The README's services file for a cluster is a valid one: its entries
/// become the Deployments, Services and images it says.
#[test]
fn the_readme_kubernetes_services_file_parses_as_documented() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let at = readme.find("# deploy/services.yml, with `services-file").expect("the example");
    let file = &readme[at..at + readme[at..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yml"), file).unwrap();
    let env = deploy_action::inputs::Env::from_pairs([
        ("INPUT_TARGET", "kubernetes"),
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

/// The README's `smoke-tests` example is a valid list.
#[test]
fn the_readme_smoke_tests_parse() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let section = readme.find("### Smoke tests").expect("the section");
    let at =
        section + readme[section..].find("smoke-tests: |\n").expect("the example") + "smoke-tests: |\n".len();
    let block: String = readme[at..readme[at..].find("```").unwrap() + at]
        .lines()
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

/// The README's rollback-triggers example is a valid step: its `with:`
/// inputs, given as the runner gives them, pass validation.
#[test]
fn the_readme_rollback_triggers_example_is_valid() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let at = readme.find("# .github/workflows/deploy.yml (the production job's step)").expect("the example");
    let block = &readme[at..at + readme[at..].find("```").unwrap()];
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
