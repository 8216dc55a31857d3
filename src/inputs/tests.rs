//! Input validation as a workflow writes it: what each target refuses of
//! the other's inputs, what the runner passes by default, and the front
//! doors of a services file.

use super::{Env, Inputs, Problem, load, raw};

/// The `GITHUB_*` context of a run in `workspace`.
fn context(workspace: &std::path::Path) -> Vec<(String, String)> {
    [
        ("GITHUB_REPOSITORY", "acme/shop"),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ("GITHUB_WORKSPACE", workspace.to_str().unwrap()),
        ("INPUT_GITHUB-DEPLOYMENTS", "false"),
        ("INPUT_IMAGE", "ghcr.io/acme/shop:1"),
        ("INPUT_AWS-REGION", "eu-west-1"),
        ("INPUT_ENVIRONMENT", "staging"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Loads `inputs` (ids as in `action.yml`) over the context; `defaults`:
/// also every other input's declared default, as the runner passes them.
fn run(inputs: &[(&str, &str)], defaults: bool, files: &[(&str, &str)]) -> Result<Inputs, Vec<Problem>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut env: Vec<(String, String)> = vec![];
    let mut set_var = |key: String, v: &str| {
        env.retain(|(e, _)| *e != key);
        env.push((key, v.to_string()));
    };
    if defaults {
        for name in raw::declared_fields() {
            if let Some(d) = raw::declared_default(name).filter(|d| !d.contains("${{")) {
                set_var(format!("INPUT_{}", name.to_uppercase()), d);
            }
        }
    }
    for (k, v) in context(dir.path()) {
        set_var(k, &v);
    }
    let mut set = |k: &str, v: &str| set_var(format!("INPUT_{}", k.to_uppercase()), v);
    // Hosts are reached with a key and pinned host keys.
    if inputs.iter().any(|(k, v)| *k == "target" && *v != "kubernetes") {
        set("ssh-private-key", "key");
        set("ssh-known-hosts", "10.0.0.1 ssh-ed25519 AAAA");
    }
    for (k, v) in inputs {
        set(k, v);
    }
    load(&Env::from_pairs(env))
}

fn problems(r: Result<Inputs, Vec<Problem>>) -> Vec<String> {
    match r {
        Ok(_) => vec![],
        Err(p) => p.iter().map(|p| format!("{}: {}", p.input, p.message)).collect(),
    }
}

#[test]
fn inputs_of_the_hosts_targets_are_refused_on_a_cluster() {
    let k8s = [("target", "kubernetes"), ("deployments", "web")];
    for (input, value) in [
        ("env", "A=b"),
        ("command", "[\"bin/web\"]"),
        ("registry-username", "deploy"),
        ("registry-password", "hunter2"),
        ("ssh-user", "ubuntu"),
        ("ssh-private-key", "key"),
        ("ssh-known-hosts-ssm", "/deploy/known-hosts"),
        ("ssh-jump-host", "bastion.example.com"),
        ("hosts", "web-1.internal"),
        ("proxy-url", "http://127.0.0.1:8080/"),
    ] {
        let mut given = k8s.to_vec();
        given.push((input, value));
        let p = problems(run(&given, false, &[]));
        assert!(
            p.iter().any(|p| p.starts_with(&format!("{input}: is only used with targets 'hosts' and 'ec2'"))),
            "{input}: {p:?}"
        );
    }
}

#[test]
fn the_defaults_the_runner_passes_are_not_refused() {
    // The runner passes every declared default (ssh-user, proxy-url,
    // blue-port, ec2-address...) whatever the target.
    let cluster = run(&[("target", "kubernetes"), ("deployments", "web")], true, &[]);
    assert_eq!(problems(cluster), Vec::<String>::new());
    let file =
        "services:\n  - {name: web, blue-port: 8181, green-port: 8182}\n  - {name: worker, proxy: false}\n";
    let hosts = run(
        &[("target", "hosts"), ("hosts", "web-1.internal"), ("services-file", "s.yml")],
        true,
        &[("s.yml", file)],
    );
    assert_eq!(
        problems(hosts),
        Vec::<String>::new(),
        "blue-port's default is no conflict with a services file"
    );
}

#[test]
fn hosts_are_refused_with_ec2_and_ec2_inputs_elsewhere() {
    let p = problems(run(
        &[("target", "ec2"), ("ssh-user", "ec2-user"), ("ec2-filters", "Role=web"), ("hosts", "10.0.0.1")],
        false,
        &[],
    ));
    assert!(
        p.iter().any(|p| p.starts_with("hosts: is only used with target 'hosts'; target 'ec2' finds")),
        "{p:?}"
    );
    let p =
        problems(run(&[("target", "hosts"), ("hosts", "10.0.0.1"), ("ec2-filters", "Role=web")], false, &[]));
    assert_eq!(p, ["ec2-filters: is only used with target 'ec2'"]);
}

#[test]
fn ec2_needs_an_ssh_user_and_names_the_ami_users() {
    let p = problems(run(&[("target", "ec2"), ("ec2-filters", "Role=web")], true, &[]));
    let msg = p.iter().find(|p| p.starts_with("ssh-user: is required for target 'ec2'")).expect("named");
    for user in ["ec2-user", "ubuntu", "admin"] {
        assert!(msg.contains(user), "{msg}");
    }
    let ok = run(&[("target", "ec2"), ("ec2-filters", "Role=web"), ("ssh-user", "ec2-user")], true, &[]);
    assert_eq!(problems(ok), Vec::<String>::new());
    // Plan reaches no host.
    let plan = run(&[("target", "ec2"), ("ec2-filters", "Role=web"), ("mode", "plan")], true, &[]);
    assert_eq!(problems(plan), Vec::<String>::new());
}

fn hosts_file(file: &str) -> Result<Inputs, Vec<Problem>> {
    run(
        &[("target", "hosts"), ("hosts", "web-1.internal"), ("app", "shop"), ("services-file", "s.yml")],
        true,
        &[("s.yml", file)],
    )
}

#[test]
fn each_service_can_have_its_own_front_door() {
    let file = "services:\n\
        - {name: api, blue-port: 8111, green-port: 8112, front-door: {host: api.shop.example}}\n\
        - {name: rest, blue-port: 8121, green-port: 8122, front-door: {url: 'http://127.0.0.1:8080/', host: 'rest.shop.example:8080'}}\n\
        - {name: admin, blue-port: 8131, green-port: 8132, version-path: /admin/version}\n\
        - {name: worker, proxy: false}\n";
    let inputs = hosts_file(file).unwrap_or_else(|p| panic!("{p:?}"));
    let proxy = &inputs.ssh.proxy_url;
    let doors: Vec<(String, u16, String)> = inputs
        .services
        .iter()
        .map(|s| {
            let (h, p, header) = s.front_door.resolve(proxy);
            (h.to_string(), p, header)
        })
        .collect();
    assert_eq!(
        doors,
        [
            ("127.0.0.1".into(), 80, "api.shop.example".into()),
            ("127.0.0.1".into(), 8080, "rest.shop.example:8080".into()),
            // No front door: the proxy-url input, as for one service.
            ("127.0.0.1".into(), 80, "127.0.0.1".into()),
            ("127.0.0.1".into(), 80, "127.0.0.1".into()),
        ]
    );
    assert_eq!(
        inputs.services[1].front_door.describe(proxy),
        "http://127.0.0.1:8080/ (Host: rest.shop.example:8080)"
    );
    assert_eq!(inputs.services[0].upstream_name, "shop_api");
}

#[test]
fn front_door_problems_are_named() {
    let file = "services:\n\
        - {name: api, blue-port: 8111, green-port: 8112, front-door: {url: 'http://127.0.0.1/api'}}\n\
        - {name: rest, blue-port: 8121, green-port: 8122, front-door: {host: 'not a host'}}\n\
        - {name: web, blue-port: 8131, green-port: 8132, front-door: {}}\n\
        - {name: worker, proxy: false, front-door: {host: w.example}}\n";
    let p = problems(hosts_file(file));
    for want in [
        "services[0] (api): front-door url http://127.0.0.1/api has a path",
        "services[1] (rest): front-door host 'not a host' must be the Host header nginx matches",
        "services[2] (web): front-door names neither url nor host",
        "services[3] (worker): has 'proxy: false' (not behind nginx) and a front-door",
    ] {
        assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
    }
    // A cluster's services file has no front doors.
    let p = problems(run(
        &[("target", "kubernetes"), ("services-file", "s.yml")],
        false,
        &[("s.yml", "services:\n  - {name: api, front-door: {host: a.example}}\n")],
    ));
    assert!(p.iter().any(|p| p.contains("front-door only apply to target 'hosts' and 'ec2'")), "{p:?}");
}

#[test]
fn two_services_checked_with_the_same_request_are_refused() {
    let file = "services:\n\
        - {name: api, blue-port: 8111, green-port: 8112}\n\
        - {name: rest, blue-port: 8121, green-port: 8122}\n";
    let p = problems(hosts_file(file));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("services api and rest are both checked at /version through http://127.0.0.1/")
            && p[0].contains("give rest its own front-door"),
        "{p:?}"
    );
    // Routed by path behind one server: their own version paths.
    let file = "services:\n\
        - {name: api, blue-port: 8111, green-port: 8112, version-path: /api/version}\n\
        - {name: rest, blue-port: 8121, green-port: 8122, version-path: /rest/version}\n";
    assert_eq!(problems(hosts_file(file)), Vec::<String>::new());
}

#[test]
fn the_environment_is_required() {
    // `context` names one; a workflow that names none is refused, with
    // nothing defaulted to production.
    let hosts = [("target", "hosts"), ("hosts", "web-1.internal"), ("environment", "")];
    let p = problems(run(&hosts, true, &[]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("environment: is required: name the GitHub environment"), "{p:?}");
    let named = run(&[("target", "hosts"), ("hosts", "web-1.internal"), ("environment", " qa ")], true, &[]);
    assert_eq!(named.map(|i| i.environment).unwrap(), "qa");
}

#[test]
fn an_old_spelling_is_read_with_a_warning() {
    let base = [("target", "hosts"), ("hosts", "web-1.internal"), ("migrate-command", "[\"migrate\"]")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut given = base.to_vec();
        given.extend_from_slice(extra);
        run(&given, true, &[])
    };
    // The new spellings; nothing deprecated.
    let i = with(&[("migrate-timeout", "3m"), ("health-check-max-latency", "250ms")]).unwrap();
    assert_eq!(i.rollout.migration_timeout, std::time::Duration::from_secs(180));
    assert_eq!(i.health.max_response_time, Some(std::time::Duration::from_millis(250)));
    assert!(i.deprecated.is_empty(), "{:?}", i.deprecated);
    // The old ones: the same values, and a warning each naming the new name.
    let i = with(&[("migration-timeout", "3m"), ("health-check-max-response-time", "250ms")]).unwrap();
    assert_eq!(i.rollout.migration_timeout, std::time::Duration::from_secs(180));
    assert_eq!(i.health.max_response_time, Some(std::time::Duration::from_millis(250)));
    let warned: Vec<String> = i.deprecated.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        warned,
        [
            "input 'health-check-max-response-time': is deprecated: it is read as 'health-check-max-latency'; rename it to 'health-check-max-latency'",
            "input 'migration-timeout': is deprecated: it is read as 'migrate-timeout'; rename it to 'migrate-timeout'",
        ]
    );
    // A bad value is named by the spelling that was written.
    let p = problems(with(&[("migration-timeout", "soon")]));
    assert!(p.iter().any(|p| p.starts_with("migration-timeout: ")), "{p:?}");
    // Both spellings: which was meant is not guessed.
    let p = problems(with(&[("migration-timeout", "3m"), ("migrate-timeout", "4m")]));
    assert_eq!(
        p,
        [
            "migration-timeout: is the old spelling of 'migrate-timeout', which is set too: set only 'migrate-timeout'"
        ]
    );
    // The new one at its default (as the runner passes it) is not "both".
    let i = with(&[("migration-timeout", "3m"), ("migrate-timeout", "10m")]).unwrap();
    assert_eq!(i.rollout.migration_timeout, std::time::Duration::from_secs(180));
}

#[test]
fn inputs_a_strategy_or_a_cluster_would_not_use_are_named() {
    // Canary inputs with another strategy, on any target.
    let p = problems(run(
        &[
            ("target", "hosts"),
            ("hosts", "web-1.internal"),
            ("strategy", "blue-green"),
            ("canary-steps", "10,100"),
        ],
        true,
        &[],
    ));
    assert_eq!(p, ["canary-steps: goes with strategy 'canary'; this run's strategy is 'blue-green'"]);
    // A rolling cluster has no observe window and no drain; a canary on a
    // cluster watches each step for canary-interval instead.
    let k8s = |extra: &[(&'static str, &'static str)]| {
        let mut given = vec![("target", "kubernetes"), ("deployments", "web")];
        given.extend_from_slice(extra);
        problems(run(&given, true, &[]))
    };
    let p = k8s(&[("observe-window", "1m"), ("drain-time", "5s")]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("observe-window: is not used by strategy 'rolling' on target 'kubernetes'"),
        "{p:?}"
    );
    assert!(p[1].starts_with("drain-time: is not used by strategy 'rolling'"), "{p:?}");
    assert_eq!(
        k8s(&[("strategy", "blue-green"), ("observe-window", "1m"), ("drain-time", "5s")]),
        Vec::<String>::new()
    );
    let p = k8s(&[("strategy", "canary"), ("observe-window", "1m"), ("canary-traffic", "httproute/web")]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("observe-window: is not used by strategy 'canary'"), "{p:?}");
    // The hosts' health checks and fleet settings on a cluster.
    let p = k8s(&[("health-check-path", "/healthz"), ("max-parallel", "2"), ("version-path", "/v")]);
    assert_eq!(p.len(), 3, "{p:?}");
    for input in ["health-check-path", "version-path", "max-parallel"] {
        assert!(
            p.iter().any(|p| p.starts_with(&format!(
                "{input}: is only used with targets 'hosts' and 'ec2'; on target 'kubernetes'"
            ))),
            "{input}: {p:?}"
        );
    }
    // The defaults the runner passes for all of them are no problem (the
    // defaults test covers every input at once).
}

/// `deployments` against manifests: a workload reached twice (a bare name
/// and its kind) is named once, not rolled twice; a bare name takes the
/// Deployment of that name before another kind's.
#[test]
fn a_workload_of_the_manifests_is_named_once_and_a_bare_name_prefers_the_deployment() {
    let workload = |kind: &str, name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      containers: [{{name: app, image: ghcr.io/acme/shop:0}}]\n"
        )
    };
    let cluster = |deployments: &str, manifests: String| {
        run(
            &[("target", "kubernetes"), ("manifests", "m.yaml"), ("deployments", deployments)],
            false,
            &[("m.yaml", &manifests)],
        )
    };
    let p = problems(cluster("db, sts/db", workload("StatefulSet", "db")));
    assert!(p.iter().any(|p| p.contains("'statefulset/db' names the StatefulSet 'db' again")), "{p:?}");
    let both = format!("{}---\n{}", workload("StatefulSet", "web"), workload("Deployment", "web"));
    let spec = cluster("web", both).unwrap().kubernetes.unwrap();
    let rolled: Vec<_> = spec.deployments.iter().filter(|d| d.name == "web").map(|d| d.kind).collect();
    assert!(rolled.contains(&super::WorkloadKind::Deployment), "{rolled:?}");
    assert_eq!(
        spec.deployments
            .iter()
            .filter(|d| d.name == "web" && d.kind == super::WorkloadKind::Deployment)
            .count(),
        1
    );
}
