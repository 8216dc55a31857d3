//! The built binary, run with the environment a runner gives it.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::action::Action;

/// A loopback listener that counts connections, to prove none was made.
struct Tripwire {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                if c.is_ok() {
                    h.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { port, hits }
    }
    fn hits(&self) -> usize {
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.hits.load(Ordering::SeqCst)
    }
}

#[test]
fn bad_inputs_name_every_problem_and_contact_nothing() {
    let (ssh, api, aws) = (Tripwire::new(), Tripwire::new(), Tripwire::new());
    let run = Action::new()
        .env("GITHUB_API_URL", &format!("http://127.0.0.1:{}", api.port))
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{}", aws.port))
        .input("target", "hosts")
        .input("hosts", &format!("root@127.0.0.1:{},-oProxyCommand=sh", ssh.port))
        .input("image", "Not An Image!")
        .input("strategy", "yolo")
        .input("health-check-timeout", "soon")
        .input("blue-port", "70000")
        .input("ssm-paths", "/app/prod/")
        .input("aws-region", "us-east-1")
        .input("github-token", "t0ken-value")
        .input("ssh-known-hosts", "x ssh-ed25519 AAAA")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for input in
        ["'hosts'", "'image'", "'strategy'", "'health-check-timeout'", "'blue-port'", "'ssh-private-key'"]
    {
        assert!(run.stdout.contains(&format!("input {input}")), "{input} not named in:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("use one of: blue-green, rolling, canary"), "{}", run.stdout);
    assert!(run.stdout.contains("::error title=deploy-action (invalid_input)::"), "{}", run.stdout);
    assert_eq!((ssh.hits(), api.hits(), aws.hits()), (0, 0, 0), "a connection was attempted");
    assert_eq!(run.output("status"), Some("error"));
    assert!(!run.all_text().contains("t0ken-value"));
}

#[test]
fn missing_required_inputs_are_all_reported() {
    // The environment too: nothing defaults to production.
    let run = Action::new().without("INPUT_ENVIRONMENT").run();
    assert_eq!(run.code, Some(2));
    for input in ["'target'", "'image'", "'github-token'", "'environment'"] {
        assert!(run.stdout.contains(&format!("input {input}")), "{input} missing in:\n{}", run.stdout);
    }
}

#[test]
fn plan_prints_the_plan_and_touches_nothing() {
    let ssh = Tripwire::new();
    let run = Action::new()
        .input("target", "hosts")
        .input("mode", "plan")
        .input("app", "shop")
        .input("image", "127.0.0.1:5000/demo/app:v2")
        .input("hosts", &format!("root@127.0.0.1:{}\ndeploy@127.0.0.9", ssh.port))
        .input("migrate-command", "/bin/migrate")
        // An old spelling is read, with a warning naming the new one.
        .input("migration-timeout", "5m")
        .input("ssm-paths", "/shop/prod/")
        .input("aws-region", "us-east-1")
        .run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "(deprecated_input)::input 'migration-timeout': is deprecated: it is read as 'migrate-timeout'"
        ),
        "{}",
        run.stdout
    );
    let plan = run.output("plan").expect("plan output");
    for expected in [
        "app shop → environment production (target hosts, strategy blue-green)",
        "image: 127.0.0.1:5000/demo/app:v2",
        "2 unit(s)",
        "shop-blue / shop-green",
        "host ports 8081 (blue) / 8082 (green)",
        "nginx upstream /etc/nginx/conf.d/upstreams/shop.conf",
        "secrets: ssm path /shop/prod/ (recursive)",
        "run the migration once on 127.0.0.1",
        "switch traffic to the candidate on 127.0.0.9",
    ] {
        assert!(plan.contains(expected), "plan lacks {expected:?}:\n{plan}");
    }
    assert!(plan.lines().count() > 8, "multi-line output survives the file command");
    assert_eq!(run.output("status"), Some("planned"));
    assert!(run.stdout.contains("::group::Plan"));
    assert!(run.summary.contains("deploy-action plan: shop → production"));
    assert!(run.summary.contains("| Strategy | blue-green |"));
    assert_eq!(ssh.hits(), 0, "plan must not connect to hosts");
}

#[test]
fn outside_actions_outputs_and_summary_go_to_the_log() {
    let run = Action::new()
        .without("GITHUB_OUTPUT")
        .without("GITHUB_STEP_SUMMARY")
        .input("target", "hosts")
        .input("mode", "plan")
        .input("image", "app:v1")
        .input("hosts", "127.0.0.9")
        .run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("output status=planned"));
    assert!(run.stdout.contains("::group::Summary"));
}

/// Each of these got past validation before: the run recorded a GitHub
/// deployment (or retried against the API) and only then failed. One bad
/// value at a time, on an otherwise valid deploy: refused before any
/// contact, naming the input.
#[test]
fn malformed_keys_references_regions_commands_and_lists_are_refused_before_any_contact() {
    let key = std::fs::read_to_string(crate::support::stack_var("SSH_KEY")).unwrap();
    let known = std::fs::read_to_string(crate::support::stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("ssh-private-key", "this is not a key"),
        ("ssh-private-key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"),
        ("ssh-known-hosts", "127.0.0.2 ssh-ed25519 !!!not-base64"),
        ("ssh-known-hosts", "just-one-field"),
        ("image", "R/app:v1"),
        ("aws-region", "us east 1"),
        ("command", r#"["unterminated"#),
        ("command", "[1,2]"),
        ("migrate-command", r#"["unterminated"#),
        ("required-contexts", "["),
        ("required-contexts", "a,,b"),
    ];
    for (input, value) in cases {
        let (ssh, api, aws) = (Tripwire::new(), Tripwire::new(), Tripwire::new());
        let mut action = Action::new()
            .env("GITHUB_API_URL", &format!("http://127.0.0.1:{}", api.port))
            .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{}", aws.port))
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret-example")
            .input("target", "hosts")
            .input("image", "127.0.0.1:5000/demo/app:v2")
            .input("hosts", &format!("root@127.0.0.1:{}", ssh.port))
            .input("ssh-private-key", &key)
            .input("ssh-known-hosts", &known)
            .input("github-token", "t0ken-value")
            .input("ssm-paths", "/app/prod/")
            .input("aws-region", "us-east-1");
        action = action.input(input, value);
        let run = action.run();
        assert_eq!(run.code, Some(2), "{input}={value:?}:\n{}", run.stdout);
        assert!(run.stdout.contains(&format!("input '{input}'")), "{input} not named:\n{}", run.stdout);
        assert_eq!(
            (ssh.hits(), api.hits(), aws.hits()),
            (0, 0, 0),
            "{input}={value:?}: a connection was made"
        );
        assert!(!run.stdout.contains("this is not a key"), "a key's text is never echoed");
    }
}

/// A deploy whose GitHub API and host are tripwires and whose AWS is moto.
fn against_moto(ssh: &Tripwire, api: &Tripwire) -> Action {
    Action::new()
        .env("GITHUB_API_URL", &format!("http://127.0.0.1:{}", api.port))
        .moto()
        .input("target", "hosts")
        .input("image", "127.0.0.1:5000/demo/app:v2")
        .input("hosts", &format!("root@127.0.0.1:{}", ssh.port))
}

/// A key or known_hosts read from SSM is checked right after the fetch,
/// before the deployment is recorded: GitHub and the hosts see nothing.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_ssh_material_from_ssm_is_refused_before_the_record() {
    use crate::support::stack_var;
    let prefix = format!("/material-{}", crate::support::action::unique_run_id());
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    for (name, value) in [("key", "not a key at all"), ("known", "127.0.0.2 ssh-ed25519 !!!")] {
        ssm.put_parameter()
            .name(format!("{prefix}/{name}"))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }
    let (ssh, api) = (Tripwire::new(), Tripwire::new());
    let action = against_moto(&ssh, &api)
        .input("ssh-private-key-ssm", &format!("{prefix}/key"))
        .input("ssh-known-hosts-ssm", &format!("{prefix}/known"))
        .input("github-token", "t0ken-value");
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    for input in ["'ssh-private-key-ssm'", "'ssh-known-hosts-ssm'"] {
        assert!(run.stdout.contains(&format!("input {input}")), "{input} not named:\n{}", run.stdout);
    }
    let shown: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect();
    assert!(!shown.iter().any(|l| l.contains("not a key at all")), "{}", run.stdout);
    assert!(run.stdout.contains("(invalid_input)"), "{}", run.stdout);
    assert_eq!((ssh.hits(), api.hits()), (0, 0), "GitHub or a host was contacted");

    // A parameter that does not exist is named with the input that named it.
    let (ssh, api) = (Tripwire::new(), Tripwire::new());
    let action = against_moto(&ssh, &api)
        .input("ssh-private-key", &std::fs::read_to_string(stack_var("SSH_KEY")).unwrap())
        .input("ssh-known-hosts", &std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap())
        .input("ssm-parameters", "X=noslash")
        .input("github-token", "t0ken-value");
    let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("named by input 'ssm-parameters'") && run.stdout.contains("noslash"),
        "{}",
        run.stdout
    );
    assert_eq!((ssh.hits(), api.hits()), (0, 0), "GitHub or a host was contacted");
}

/// A `retry-after` or `x-ratelimit-reset` near the integer limits once
/// overflowed `Instant + Duration`; with `panic = "abort"` that killed the
/// process (PID 1) mid-deploy. Now such a hint is capped: the call fails
/// with the rate-limit reason, and the run ends as a run. (A reset far in
/// the past only means "retry soon": the unit tests cover `i64::MIN`.)
#[tokio::test(flavor = "multi_thread")]
async fn retry_hints_at_the_integer_limits_fail_the_call_not_the_process() {
    use crate::support::github_server::{GithubServer, TOKEN};
    for headers in [
        serde_json::json!({"retry-after": u64::MAX.to_string()}),
        serde_json::json!({"x-ratelimit-remaining": "0", "x-ratelimit-reset": i64::MAX.to_string()}),
    ] {
        let server = GithubServer::start(None).await;
        server
            .fault(serde_json::json!({"method": "GET", "path": "/deployments", "status": 403, "kind": "rate_limit", "headers": headers, "times": null}))
            .await;
        let ssh = Tripwire::new();
        let action = Action::new()
            .env("GITHUB_API_URL", &server.base_url)
            .input("target", "hosts")
            .input("image", "127.0.0.1:5000/demo/app:v2")
            .input("hosts", &format!("root@127.0.0.1:{}", ssh.port))
            .input("ssh-private-key", &std::fs::read_to_string(crate::support::stack_var("SSH_KEY")).unwrap())
            .input(
                "ssh-known-hosts",
                &std::fs::read_to_string(crate::support::stack_var("SSH_KNOWN_HOSTS")).unwrap(),
            )
            .input("github-token", TOKEN);
        let run = tokio::task::spawn_blocking(move || action.run()).await.unwrap();
        assert_eq!(
            run.code,
            Some(1),
            "{headers}: not a crash, a failed run:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        assert!(run.stdout.contains("github_rate_limited"), "{headers}:\n{}", run.stdout);
        assert_eq!(run.output("status"), Some("failure"), "{headers}");
    }
}
