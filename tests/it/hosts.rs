//! `HostTarget` driven directly against the local stack's simulated hosts
//! (library level; full binary runs live in `deploy.rs`).
//!
//! Isolation: every test deploys its own app (`t-<name>`) on its own ports,
//! with its own nginx front door: the test installs
//! `/etc/nginx/conf.d/<app>.conf` (a `server` listening on 127.0.0.1:<port>
//! inside the host, proxying to the upstream in
//! `/etc/nginx/conf.d/upstreams/<app>.conf`) before deploying, and removes
//! it at the end. The stack's shared `app` (port 80) is never touched, so
//! these tests run in parallel with each other and with the binary tests.
//! The front door is read from inside the host (`host-exec … curl`), as
//! only ports 22 and 80 are forwarded out of a host.

use std::time::Duration;

use deploy_action::inputs::{RestartPolicy, Service, grammar};
use deploy_action::probe::Via;
use deploy_action::secrets::SecretValue;
use deploy_action::targets::hosts::{HostConn, HostTarget};
use deploy_action::targets::{Release, Target, TargetError};

use crate::support::{Log, host_addr, host_exec, stack_var};

const LOCK_DIR: &str = "/var/lib/deploy-action/locks";

/// One test app on one host: ports, front door, cleanup.
struct App {
    k: usize,
    name: String,
    blue: u16,
    green: u16,
    front: u16,
}

impl App {
    /// Installs the app's front door on host `k` and clears leftovers.
    fn new(k: usize, name: &str, base_port: u16) -> App {
        let app =
            App { k, name: name.to_string(), blue: base_port + 1, green: base_port + 2, front: base_port };
        app.cleanup();
        let upstream =
            format!("upstream {} {{\n    server 127.0.0.1:{};\n}}\n", app.upstream_name(), app.blue);
        let server = format!(
            "include {};\nserver {{\n    listen 127.0.0.1:{};\n    location / {{\n        proxy_pass http://{};\n        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_connect_timeout 2s;\n    }}\n}}\n",
            app.upstream_file(),
            app.front,
            app.upstream_name()
        );
        // The upstream file first: the server file includes it.
        app.sh_locked(&format!(
            "mkdir -p /etc/nginx/conf.d/upstreams && printf '%s' '{upstream}' > {up} && printf '%s' '{server}' > /etc/nginx/conf.d/{n}.conf && {{ nginx -t 2>/dev/null && nginx -s reload; }}",
            up = app.upstream_file(),
            n = app.name
        ));
        app
    }

    fn sh(&self, script: &str) -> String {
        host_exec(self.k, &["sh", "-c", script])
    }

    /// Runs `script` holding the host's nginx switch lock (the one
    /// `HostTarget` takes), so a deploy's half-done switch is never judged.
    fn sh_locked(&self, script: &str) -> String {
        self.sh(&format!("mkdir -p {LOCK_DIR}"));
        host_exec(self.k, &["flock", &format!("{LOCK_DIR}/nginx-switch.flock"), "sh", "-c", script])
    }

    fn upstream_file(&self) -> String {
        format!("/etc/nginx/conf.d/upstreams/{}.conf", self.name)
    }

    fn upstream_name(&self) -> String {
        format!("{}_backend", self.name.replace('-', "_"))
    }

    fn service(&self, image: &str) -> Service {
        Service {
            name: String::new(),
            image: grammar::image(image).unwrap(),
            container_port: stack_var("APP_PORT").parse().unwrap(),
            blue_port: self.blue,
            green_port: self.green,
            health_path: Some("/health".into()),
            version_path: Some("/version".into()),
            env: vec![],
            command: None,
            restart_policy: RestartPolicy::UnlessStopped,
            behind_proxy: true,
            upstream_file: self.upstream_file(),
            upstream_name: self.upstream_name(),
            front_door: Default::default(),
        }
    }

    fn release(&self, image: &str, deploy_id: &str) -> Release {
        Release {
            app: self.name.clone(),
            deploy_id: deploy_id.into(),
            run_url: format!("https://github.com/acme/shop/actions/runs/{deploy_id}"),
            services: vec![self.service(image)],
            secret_env: vec![("DB_PASSWORD".into(), SecretValue::new("hunter2-secret".into()))],
            secrets_fingerprint: Some("sha256:test".into()),
            migrate_command: None,
            pre_migrate_command: None,
            migrate_rollback_command: None,
        }
    }

    fn conn(&self) -> HostConn {
        HostConn {
            name: host_addr(self.k),
            host: host_addr(self.k),
            port: 22,
            user: stack_var("SSH_USER"),
            private_key: SecretValue::new(std::fs::read_to_string(stack_var("SSH_KEY")).unwrap()),
            known_hosts: SecretValue::new(std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap()),
            timeout: Duration::from_secs(20),
            long_timeout: Duration::from_secs(180),
            migration_timeout: Duration::from_secs(60),
            docker_socket: "/var/run/docker.sock".into(),
            proxy_url: format!("http://127.0.0.1:{}", self.front).parse().unwrap(),
            lock_dir: LOCK_DIR.into(),
            break_lock: false,
            jump: None,
            via: None,
            privilege: deploy_action::targets::hosts::shell::Privilege::Direct,
            registry: Some((
                stack_var("REGISTRY_USERNAME"),
                SecretValue::new(stack_var("REGISTRY_PASSWORD")),
            )),
            app: self.name.clone(),
            services: vec![self.service(&stack_var("IMAGE_V1"))],
            access_log: None,
        }
    }

    async fn connect(&self, log: &Log) -> HostTarget {
        HostTarget::connect(self.conn(), log.runner()).await.expect("connect")
    }

    /// What the front door answers on `path`, asked from inside the host.
    fn front_door(&self, path: &str) -> String {
        host_exec(self.k, &["curl", "-s", "-m", "5", &format!("http://127.0.0.1:{}{path}", self.front)])
    }

    fn containers(&self) -> Vec<String> {
        let out = host_exec(
            self.k,
            &[
                "docker",
                "ps",
                "-a",
                "--filter",
                &format!("label=deploy-action.app={}", self.name),
                "--format",
                "{{.Names}}",
            ],
        );
        let mut names: Vec<String> = out.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    fn cleanup(&self) {
        self.sh_locked(&format!(
            "docker ps -aq --filter label=deploy-action.app={n} | xargs -r docker rm -f >/dev/null; rm -f /etc/nginx/conf.d/{n}.conf {up}; rm -rf {LOCK_DIR}/{n}.lock; {{ nginx -t 2>/dev/null && nginx -s reload; }}",
            n = self.name,
            up = self.upstream_file()
        ));
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.cleanup();
    }
}

async fn wait_healthy(t: &HostTarget, r: &Release) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..60 {
        match t.probe(r, 0, Via::Candidate, "/health").await {
            Ok(p) if p.status == 200 => return Ok(()),
            Ok(p) => last = format!("HTTP {}", p.status),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// prepare → launch → healthy → switch → retire, as the pipeline does.
async fn deploy(app: &App, log: &Log, image: &str, deploy_id: &str) {
    let t = app.connect(log).await;
    let r = app.release(image, deploy_id);
    t.prepare(&r).await.expect("prepare");
    t.launch(&r).await.expect("launch");
    wait_healthy(&t, &r).await.expect("candidate healthy");
    t.shift(&r, 100).await.expect("switch");
    t.retire(&r).await.expect("retire");
    t.close().await;
}

fn reason(e: &TargetError) -> &'static str {
    e.reason()
}

#[tokio::test]
async fn host_keys_are_pinned() {
    let app = App { k: 1, name: "t-pinning".into(), blue: 0, green: 0, front: 80 };
    let log = Log::default();
    let known = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let line_of =
        |addr: &str| known.lines().find(|l| l.starts_with(&format!("{addr} "))).unwrap().to_string();

    // Host 1 pinned with host 2's key: a changed key.
    let mut conn = app.conn();
    let other_key = line_of(&host_addr(2)).split_once(' ').unwrap().1.to_string();
    conn.known_hosts = SecretValue::new(format!("{} {other_key}\n", host_addr(1)));
    let e = HostTarget::connect(conn, log.runner()).await.err().expect("mismatch refused");
    assert_eq!(reason(&e), "host_key_mismatch", "{e}");
    assert!(e.to_string().contains(&host_addr(1)) && e.to_string().contains("SHA256:"), "{e}");

    // Only another host pinned: unknown, with the line to add.
    let mut conn = app.conn();
    conn.known_hosts = SecretValue::new(line_of(&host_addr(2)));
    let e = HostTarget::connect(conn, log.runner()).await.err().expect("unknown refused");
    assert_eq!(reason(&e), "host_key_unknown", "{e}");
    assert!(e.to_string().contains(&line_of(&host_addr(1))), "the fix names the line: {e}");

    // The stack's known_hosts: connects, and the Docker Engine answers.
    let t = app.connect(&log).await;
    assert_eq!(t.inspect().await.unwrap(), Default::default());
    t.close().await;
}

#[tokio::test]
async fn first_deploy_then_next_version_alternates_colours() {
    let app = App::new(1, "t-bluegreen", 9110);
    let log = Log::default();

    deploy(&app, &log, &stack_var("IMAGE_V1"), "101-1").await;
    assert_eq!(app.front_door("/version").trim(), "v1");
    assert_eq!(app.containers(), ["t-bluegreen-blue"]);
    let t = app.connect(&log).await;
    let live = t.inspect().await.unwrap();
    assert_eq!(live.colour.as_deref(), Some("blue"));
    assert_eq!(live.image, Some(stack_var("IMAGE_V1")));
    assert_eq!(live.secrets_fingerprint.as_deref(), Some("sha256:test"));
    t.close().await;

    deploy(&app, &log, &stack_var("IMAGE_V2"), "102-1").await;
    assert_eq!(app.front_door("/version").trim(), "v2");
    assert_eq!(app.containers(), ["t-bluegreen-green"], "the old colour is retired");
    let upstream = app.sh(&format!("cat {}", app.upstream_file()));
    assert!(upstream.contains(&format!("server 127.0.0.1:{};", app.green)), "{upstream}");

    // The secret reached the container, and never the log.
    let env = host_exec(1, &["docker", "inspect", "-f", "{{json .Config.Env}}", "t-bluegreen-green"]);
    assert!(env.contains("DB_PASSWORD=hunter2-secret"), "{env}");
    assert!(!log.text().contains("hunter2-secret"), "{}", log.text());
    // The lock is released on close.
    assert_eq!(app.sh(&format!("test -e {LOCK_DIR}/t-bluegreen.lock && echo held")), "");
}

#[tokio::test]
async fn canary_weights_then_full_switch() {
    let app = App::new(1, "t-canary", 9150);
    let log = Log::default();
    deploy(&app, &log, &stack_var("IMAGE_V1"), "151-1").await;

    let t = app.connect(&log).await;
    let r = app.release(&stack_var("IMAGE_V2"), "152-1");
    t.prepare(&r).await.unwrap();
    t.launch(&r).await.unwrap();
    wait_healthy(&t, &r).await.unwrap();
    t.shift(&r, 25).await.expect("canary step");
    let upstream = app.sh(&format!("cat {}", app.upstream_file()));
    assert!(upstream.contains(&format!("server 127.0.0.1:{} weight=75;", app.blue)), "{upstream}");
    assert!(upstream.contains(&format!("server 127.0.0.1:{} weight=25;", app.green)), "{upstream}");
    let answers: Vec<String> = (0..8).map(|_| app.front_door("/version").trim().to_string()).collect();
    assert!(answers.iter().any(|a| a == "v1") && answers.iter().any(|a| a == "v2"), "{answers:?}");

    // Rolling back mid-canary restores the file from before the first step.
    t.rollback(&r).await.unwrap();
    assert_eq!(app.front_door("/version").trim(), "v1");
    assert_eq!(app.containers(), ["t-canary-blue"]);
    t.rollback(&r).await.expect("rollback is idempotent");
    t.close().await;
}

#[tokio::test]
async fn broken_candidate_is_rolled_back_and_the_old_version_keeps_serving() {
    let app = App::new(2, "t-broken", 9120);
    let log = Log::default();
    deploy(&app, &log, &stack_var("IMAGE_V1"), "121-1").await;

    let t = app.connect(&log).await;
    let r = app.release(&stack_var("IMAGE_BROKEN"), "122-1");
    t.prepare(&r).await.unwrap();
    t.launch(&r).await.unwrap();
    let mut healthy = false;
    for _ in 0..20 {
        if matches!(t.probe(&r, 0, Via::Candidate, "/health").await, Ok(p) if p.status == 200) {
            healthy = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!healthy, "the broken image must never be healthy");
    t.rollback(&r).await.expect("rollback");
    t.close().await;

    assert_eq!(app.front_door("/version").trim(), "v1");
    assert_eq!(app.containers(), ["t-broken-blue"]);
    let t = app.connect(&log).await;
    assert_eq!(t.inspect().await.unwrap().image, Some(stack_var("IMAGE_V1")));
    t.close().await;
}

#[tokio::test]
async fn a_rejected_nginx_config_is_put_back() {
    let app = App::new(3, "t-nginxbad", 9130);
    let log = Log::default();
    deploy(&app, &log, &stack_var("IMAGE_V1"), "131-1").await;
    let before = app.sh(&format!("cat {}", app.upstream_file()));

    let t = app.connect(&log).await;
    let mut r = app.release(&stack_var("IMAGE_V2"), "132-1");
    // The stack's own upstream is called app_backend: a duplicate that
    // `nginx -t` refuses.
    r.services[0].upstream_name = "app_backend".into();
    t.prepare(&r).await.unwrap();
    t.launch(&r).await.unwrap();
    wait_healthy(&t, &r).await.unwrap();
    let e = t.shift(&r, 100).await.expect_err("nginx -t must refuse");
    assert_eq!(reason(&e), "nginx_config_rejected", "{e}");
    assert!(e.to_string().contains("duplicate upstream"), "{e}");
    assert_eq!(app.sh(&format!("cat {}", app.upstream_file())), before, "previous file restored");
    assert_eq!(app.front_door("/version").trim(), "v1");
    t.rollback(&r).await.unwrap();
    t.close().await;
    assert_eq!(app.containers(), ["t-nginxbad-blue"]);
    assert_eq!(app.front_door("/version").trim(), "v1");
}

#[tokio::test]
async fn migrations_run_once_and_failures_carry_the_log() {
    let app = App::new(2, "t-migrate", 9140);
    let log = Log::default();
    let t = app.connect(&log).await;

    let mut r = app.release(&stack_var("IMAGE_V1"), "141-1");
    r.migrate_command = Some(vec!["/bin/migrate".into()]);
    t.prepare(&r).await.unwrap();
    t.migrate(&r).await.expect("migration succeeds");
    assert!(log.text().contains("migrated v1"), "{}", log.text());

    r.services[0].env.push(("MIGRATE_FAIL".into(), "1".into()));
    let e = t.migrate(&r).await.expect_err("migration fails");
    assert!(matches!(e, TargetError::Migration { .. }), "{e:?}");
    assert!(e.to_string().contains("exited with status 3"), "{e}");
    assert!(e.to_string().contains("migration for v1 failed"), "{e}");
    assert!(app.containers().is_empty(), "the one-off container is removed");
    t.close().await;
}

#[tokio::test]
async fn a_wrong_registry_password_is_a_clear_error() {
    let app = App { k: 3, name: "t-regauth".into(), blue: 9161, green: 9162, front: 9160 };
    let log = Log::default();
    let mut conn = app.conn();
    conn.registry = Some((stack_var("REGISTRY_USERNAME"), SecretValue::new("not-the-password".into())));
    let t = HostTarget::connect(conn, log.runner()).await.unwrap();
    let e = t.prepare(&app.release(&stack_var("IMAGE_V3"), "161-1")).await.expect_err("pull refused");
    assert_eq!(reason(&e), "registry_auth_failed", "{e}");
    assert!(e.to_string().contains("registry-password"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    t.close().await;
    app.cleanup();
}

#[tokio::test]
async fn a_held_lock_names_its_owner_and_can_be_broken() {
    let app = App::new(1, "t-lock", 9170);
    let log = Log::default();
    let first = app.connect(&log).await;
    first.prepare(&app.release(&stack_var("IMAGE_V1"), "171-1")).await.unwrap();

    let second = app.connect(&log).await;
    let e = second.prepare(&app.release(&stack_var("IMAGE_V1"), "172-1")).await.expect_err("locked");
    assert!(matches!(e, TargetError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("deploy 171-1") && e.to_string().contains("runs/171-1"), "{e}");
    second.close().await;

    let mut conn = app.conn();
    conn.break_lock = true;
    let third = HostTarget::connect(conn, log.runner()).await.unwrap();
    third.prepare(&app.release(&stack_var("IMAGE_V1"), "173-1")).await.expect("lock broken");
    assert!(log.text().contains("breaking the deploy lock held by deploy 171-1"), "{}", log.text());
    // The first run no longer owns the lock: its close leaves it alone.
    first.close().await;
    assert!(app.sh(&format!("cat {LOCK_DIR}/t-lock.lock/owner")).contains("173-1"));
    third.close().await;
    assert_eq!(app.sh(&format!("test -e {LOCK_DIR}/t-lock.lock && echo held")), "");
}

#[tokio::test]
async fn ec2_finds_running_instances_by_tag() {
    use deploy_action::inputs::{AddressKind, Ec2Spec};

    let config = crate::support::moto_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    // A unique tag value per run: moto's state outlives a test.
    let run = format!("it-{}", std::process::id());
    let ids = crate::support::moto_instances(
        &config,
        &run,
        &[("127.0.0.3", "web"), ("127.0.0.2", "web"), ("127.0.0.4", "worker")],
    )
    .await;

    let spec = Ec2Spec {
        instance_ids: vec![],
        filters: vec![("Role".into(), vec!["web".into()]), ("tag:Run".into(), vec![run.clone()])],
        address: AddressKind::PrivateIp,
        connect: deploy_action::inputs::Ec2Connect::Ssh,
        console_host_keys: false,
    };
    let hosts = deploy_action::targets::ec2::discover_with(&config, &spec, "deploy", 2222).await.unwrap();
    let mut addrs: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
    addrs.sort_unstable();
    assert_eq!(addrs, ["127.0.0.2", "127.0.0.3"]);
    assert!(hosts.iter().all(|h| h.user.as_deref() == Some("deploy") && h.port == Some(2222)));

    // Stopped instances are not deploy targets; nothing left → the filter is shown.
    ec2.stop_instances().instance_ids(&ids[2]).send().await.unwrap();
    let spec = Ec2Spec {
        instance_ids: vec![],
        filters: vec![("Role".into(), vec!["worker".into()]), ("tag:Run".into(), vec![run.clone()])],
        address: AddressKind::PrivateIp,
        connect: deploy_action::inputs::Ec2Connect::Ssh,
        console_host_keys: false,
    };
    let e = deploy_action::targets::ec2::discover_with(&config, &spec, "deploy", 22).await.unwrap_err();
    assert_eq!(e.reason(), "no_instances_found", "{e}");
    assert!(
        e.to_string().contains("tag:Role=worker") && e.to_string().contains("instance-state-name=running"),
        "{e}"
    );

    ec2.terminate_instances().set_instance_ids(Some(ids)).send().await.unwrap();
}
