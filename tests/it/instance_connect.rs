//! `ec2-connect: instance-connect-endpoint` through the built binary, on
//! stack host 6 made an Instance Connect instance: its sshd takes no static
//! key, only keys SendSSHPublicKey pushed (60 s), and is reached only
//! through the stack's endpoint (`scripts/stack/eice/server.py`), which
//! checks each tunnel's SigV4 signature with botocore.

use std::time::{Duration, Instant};

use crate::support::action::{Action, Run};
use crate::support::{
    live_version, moto_config, moto_instances, repo_root, running_colours, shared_app_inputs, stack_var,
};

/// The host these tests turn into an Instance Connect instance.
const HOST: usize = 6;

/// One value of the endpoint's env file (`scripts/stack/eice/up`), which
/// is also merged into the stack's.
fn eice_var(key: &str) -> String {
    let path = std::path::Path::new(&stack_var("STACK_DIR")).join("eice/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("the Instance Connect Endpoint is not up ({}: {e}); run scripts/stack/eice/up", path.display())
    });
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from))
        .unwrap_or_else(|| panic!("{key} missing from {}", path.display()))
}

/// Host 6 (or the hosts given) as Instance Connect instances: a moto
/// instance at each one's address, one endpoint in their subnet, each
/// sshd on pushed keys only, for as long as it lives; every sshd gets its
/// static key back when it is dropped.
struct Instance {
    run_tag: String,
    endpoint_id: String,
    /// The first host's instance.
    instance_id: String,
    hosts: Vec<usize>,
    instance_ids: Vec<String>,
}

/// `scripts/stack/eice/host-sshd K on|off`.
fn host_sshd(k: usize, on: &str) -> std::process::Output {
    std::process::Command::new(repo_root().join("scripts/stack/eice/host-sshd"))
        .args([&k.to_string(), on])
        .env("STACK_DIR", stack_var("STACK_DIR"))
        .output()
        .unwrap()
}

/// Stack host K's address (`h1` is 127.0.0.2).
fn address(k: usize) -> String {
    format!("127.0.0.{}", k + 1)
}

impl Instance {
    fn new() -> Instance {
        Instance::on(&[HOST])
    }

    fn on(hosts: &[usize]) -> Instance {
        for &k in hosts {
            let out = host_sshd(k, "on");
            assert!(out.status.success(), "host-sshd {k} on: {}", String::from_utf8_lossy(&out.stderr));
        }
        let run_tag = format!("eice-{}-{}", std::process::id(), crate::support::action::unique_run_id());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let addresses: Vec<String> = hosts.iter().map(|&k| address(k)).collect();
        let (endpoint_id, instance_ids) = rt.block_on(async {
            let config = eice_config().await;
            let wanted: Vec<(&str, &str)> = addresses.iter().map(|a| (a.as_str(), "web")).collect();
            let ids = moto_instances(&config, &run_tag, &wanted).await;
            let ec2 = aws_sdk_ec2::Client::new(&config);
            let described = ec2.describe_instances().instance_ids(&ids[0]).send().await.unwrap();
            let subnet = described.reservations()[0].instances()[0].subnet_id().unwrap().to_string();
            let e = ec2
                .create_instance_connect_endpoint()
                .subnet_id(subnet)
                .send()
                .await
                .expect("create endpoint");
            (e.instance_connect_endpoint().unwrap().instance_connect_endpoint_id().unwrap().to_string(), ids)
        });
        Instance {
            run_tag,
            endpoint_id,
            instance_id: instance_ids[0].clone(),
            hosts: hosts.to_vec(),
            instance_ids,
        }
    }

    /// A deploy of `image` to this instance through the endpoint, with no
    /// SSH key given.
    fn action(&self, image: &str) -> Action {
        Action::new()
            .inputs(shared_app_inputs(&[], image))
            .without("INPUT_HOSTS")
            .without("INPUT_SSH-PRIVATE-KEY")
            .input("target", "ec2")
            .input("ssh-user", "root")
            .input("ec2-filters", &format!("Role=web,Run={}", self.run_tag))
            .input("ec2-connect", "instance-connect-endpoint")
            .moto()
            .env("AWS_ENDPOINT_URL_EC2", &eice_var("EICE_URL"))
            .env("AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT", &eice_var("EICE_URL"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for &k in &self.hosts {
            let _ = host_sshd(k, "off");
        }
        let (endpoint, instances) = (self.endpoint_id.clone(), self.instance_ids.clone());
        if let Ok(rt) = tokio::runtime::Runtime::new() {
            rt.block_on(async {
                let ec2 = aws_sdk_ec2::Client::new(&eice_config().await);
                let _ = ec2
                    .delete_instance_connect_endpoint()
                    .instance_connect_endpoint_id(endpoint)
                    .send()
                    .await;
                let _ = ec2.terminate_instances().set_instance_ids(Some(instances)).send().await;
            });
        }
    }
}

/// The SDK configuration of the stack, with EC2 pointed at the endpoint
/// server (it serves the Instance Connect Endpoint API, passes the rest to moto).
async fn eice_config() -> aws_config::SdkConfig {
    let moto = moto_config().await;
    moto.into_builder().endpoint_url(eice_var("EICE_URL")).build()
}

fn image(v: &str) -> String {
    stack_var(&format!("IMAGE_{}", v.to_uppercase()))
}

/// The endpoint's log since `from` bytes.
fn eice_log_since(from: u64) -> String {
    let text = std::fs::read(eice_var("EICE_LOG")).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned()
}

fn eice_log_len() -> u64 {
    std::fs::metadata(eice_var("EICE_LOG")).map(|m| m.len()).unwrap_or(0)
}

fn deploy(instance: &Instance, v: &str) -> Run {
    let run = instance.action(&image(v)).run();
    assert_eq!(run.code, Some(0), "deploy {v} through the endpoint:\n{}", run.stdout);
    assert_eq!(live_version(HOST), v);
    run
}

/// A deploy through the endpoint to a host whose sshd takes no static key:
/// the key the run made and pushed is the only way in, the tunnel's
/// signature is checked, and nothing of the key reaches the output.
#[test]
fn a_deploy_through_the_endpoint_needs_no_stored_key() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    // The stack's own key no longer logs in.
    let refused = std::process::Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", &stack_var("SSH_KEY")])
        .args(["-o", &format!("UserKnownHostsFile={}", stack_var("SSH_KNOWN_HOSTS"))])
        .args(["root@127.0.0.7", "true"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "host 6 still takes the static key");

    let from = eice_log_len();
    deploy(&instance, "v1");
    let run = deploy(&instance, "v2");
    assert_eq!(running_colours(HOST, "app").len(), 1);
    let log = eice_log_since(from);
    assert!(log.contains(&format!("ALLOW tunnel {} -> 127.0.0.7:22", instance.endpoint_id)), "{log}");
    assert!(log.contains(&format!("ALLOW SendSSHPublicKey {}", instance.instance_id)), "{log}");
    assert!(!log.contains("DENY"), "{log}");
    assert!(run.stdout.contains(&instance.endpoint_id), "the endpoint used is named:\n{}", run.stdout);
    assert!(!run.all_text().contains("PRIVATE KEY"), "{}", run.all_text());
}

/// A fleet through one endpoint: hosts 4 and 6, neither taking a static
/// key, deployed one at a time (`max-parallel: 1`), each reached through
/// its own tunnel with the run's key pushed for it; both end on the new
/// version, one colour each.
#[test]
fn a_fleet_deploys_through_the_endpoint_with_no_stored_key() {
    let _lock = crate::fleet::lock_hosts(&[4, 6]);
    let fleet = Instance::on(&[4, 6]);
    let from = eice_log_len();
    for v in ["v1", "v2"] {
        let run = fleet.action(&image(v)).input("max-parallel", "1").run();
        assert_eq!(run.code, Some(0), "deploy {v} to the fleet through the endpoint:\n{}", run.stdout);
        assert_eq!(run.output("hosts").map(|h| h.split(',').count()), Some(2), "{}", run.stdout);
        for k in [4, 6] {
            assert_eq!(live_version(k), v, "host {k}");
            assert_eq!(running_colours(k, "app").len(), 1, "host {k}: one colour");
        }
    }
    let log = eice_log_since(from);
    for (k, id) in [4, 6].iter().zip(&fleet.instance_ids) {
        assert!(log.contains(&format!("ALLOW tunnel {} -> {}:22", fleet.endpoint_id, address(*k))), "{log}");
        assert!(log.contains(&format!("ALLOW SendSSHPublicKey {id}")), "{log}");
    }
    assert!(!log.contains("DENY"), "{log}");
}

/// `ec2-host-keys: console-output`: no known_hosts stored at all; each
/// instance's host key is read from its console output (GetConsoleOutput)
/// and pinned for the run.
#[test]
fn host_keys_from_the_console_output_need_no_stored_line() {
    let _lock = crate::fleet::lock_hosts(&[4, 6]);
    let fleet = Instance::on(&[4, 6]);
    let from = eice_log_len();
    let run = fleet
        .action(&image("v3"))
        .without("INPUT_SSH-KNOWN-HOSTS")
        .input("ec2-host-keys", "console-output")
        .run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("pinned 2 host key(s) of 2 instance(s), from GetConsoleOutput"),
        "{}",
        run.stdout
    );
    for k in [4, 6] {
        assert_eq!(live_version(k), "v3", "host {k}");
    }
    let log = eice_log_since(from);
    for id in &fleet.instance_ids {
        assert!(log.contains(&format!("ALLOW GetConsoleOutput {id}")), "{log}");
    }
}

/// The console output is what is trusted: one that shows another host's
/// key stops the run at the handshake (`host_key_mismatch`), one that
/// shows none is named (`host_keys_unavailable`); nothing changes.
#[test]
fn a_console_output_with_another_key_or_none_changes_nothing() {
    let _lock = crate::fleet::lock_hosts(&[4, 6]);
    let instance = Instance::new();
    deploy(&instance, "v1");
    let dir = std::path::Path::new(&stack_var("STACK_DIR")).join("eice/console");
    std::fs::create_dir_all(&dir).unwrap();
    let override_file = dir.join(address(HOST));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(override_file.clone());
    let host4_key = std::fs::read_to_string(
        std::path::Path::new(&stack_var("STACK_DIR")).join("hosts/h4/ssh/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    let run_with = |console: &str| {
        std::fs::write(&override_file, console).unwrap();
        instance
            .action(&image("v2"))
            .without("INPUT_SSH-KNOWN-HOSTS")
            .input("ec2-host-keys", "console-output")
            .run()
    };
    let run = run_with(&format!(
        "-----BEGIN SSH HOST KEY KEYS-----\r\n{}\r\n-----END SSH HOST KEY KEYS-----\r\n",
        host4_key.trim()
    ));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("host_key_mismatch"), "{}", run.stdout);
    assert_eq!(live_version(HOST), "v1");
    let run = run_with("[    0.000000] Linux version 6.1.0\r\nlogin:\r\n");
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("host_keys_unavailable"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{}: its console output holds no SSH host keys", instance.instance_id)),
        "{}",
        run.stdout
    );
    assert_eq!(live_version(HOST), "v1");
    assert_eq!(running_colours(HOST, "app").len(), 1);
}

/// A tunnel signed with the wrong secret is refused by the endpoint, and
/// the run names it (nothing else is contacted, nothing changes).
#[test]
fn a_refused_tunnel_signature_is_named() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    let before = live_version(HOST);
    let run = instance.action(&image("v3")).env("AWS_SECRET_ACCESS_KEY", "not-the-secret").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("instance_connect_tunnel_refused"), "{}", run.stdout);
    assert!(run.stdout.contains("SignatureDoesNotMatch"), "the endpoint's reason is shown:\n{}", run.stdout);
    assert!(run.stdout.contains(&instance.endpoint_id), "{}", run.stdout);
    assert!(!run.all_text().contains("not-the-secret"));
    assert_eq!(live_version(HOST), before, "nothing changed");
}

/// SIGTERM while the deploy observes through the tunnel: out within 7 s,
/// the previous version back, exactly one colour running.
#[test]
fn sigterm_through_the_endpoint_exits_within_7s_with_one_version_serving() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    deploy(&instance, "v1");
    let action = instance.action(&image("v2")).input("observe-window", "60s");
    let mut child = action.spawn();
    crate::support::wait_until_serving(HOST, "v2", &mut child, Duration::from_secs(90));
    let signalled = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let run = action.finish(out);
    crate::support::save_figures(
        "instance-connect-sigterm",
        &format!(
            "SIGTERM mid-observe through an Instance Connect tunnel: exited {:.1}s later\n",
            took.as_secs_f64()
        ),
    );
    assert!(took < Duration::from_secs(7), "took {took:?}:\n{}", run.stdout);
    assert_eq!(run.output("status"), Some("error"), "{}", run.stdout);
    assert_eq!(live_version(HOST), "v1", "rolled back");
    assert_eq!(running_colours(HOST, "app").len(), 1, "exactly one version runs");
}

/// SIGTERM just after the endpoint closed every tunnel: the way back
/// opens a new one (and pushes the key) inside the budget after a signal,
/// so the run still ends within 7 s with the previous version back.
#[test]
fn sigterm_after_the_tunnel_closed_reconnects_within_the_budget() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    deploy(&instance, "v1");
    let from = eice_log_len();
    let action = instance.action(&image("v2")).input("observe-window", "60s");
    let mut child = action.spawn();
    crate::support::wait_until_serving(HOST, "v2", &mut child, Duration::from_secs(90));
    assert!(reqwest_close_tunnels() >= 1, "a tunnel was open to close");
    let signalled = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let run = action.finish(out);
    let log = eice_log_since(from);
    crate::support::save_figures(
        "instance-connect-sigterm-reconnect",
        &format!(
            "SIGTERM right after the endpoint closed the tunnel: exited {:.1}s later\n",
            took.as_secs_f64()
        ),
    );
    assert!(took < Duration::from_secs(7), "took {took:?}:\n{}", run.stdout);
    assert!(log.contains("ALLOW tunnel"), "the way back opened a new tunnel:\n{log}");
    assert_eq!(run.output("status"), Some("error"), "{}", run.stdout);
    assert_eq!(live_version(HOST), "v1", "rolled back:\n{}", run.stdout);
    assert_eq!(running_colours(HOST, "app").len(), 1, "exactly one version runs");
}

/// The endpoint ends every tunnel while the deploy observes: the next
/// step opens a new tunnel (its key pushed again when the last push is
/// old) and the deploy ends with exactly one version serving, the one
/// its status names.
#[test]
fn a_tunnel_closed_mid_deploy_is_opened_again() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    deploy(&instance, "v1");
    let from = eice_log_len();
    let action = instance.action(&image("v2")).input("observe-window", "6s");
    let mut child = action.spawn();
    crate::support::wait_until_serving(HOST, "v2", &mut child, Duration::from_secs(90));
    let closed = reqwest_close_tunnels();
    let out = child.wait_with_output().unwrap();
    let run = action.finish(out);
    let log = eice_log_since(from);
    assert!(closed >= 1, "a tunnel was open to close");
    let tunnels = log.matches("ALLOW tunnel").count();
    assert!(tunnels >= 2, "a new tunnel after the close ({tunnels}):\n{log}");
    assert_one_version_serves(&run);
}

/// After a tunnel closed mid-deploy: v2 serves when the run succeeded,
/// else the way back completed to v1; either way one colour runs.
fn assert_one_version_serves(run: &Run) {
    let live = live_version(HOST);
    match run.code {
        Some(0) => assert_eq!(live, "v2", "{}", run.stdout),
        _ => assert_eq!(live, "v1", "the way back completed:\n{}", run.stdout),
    }
    assert_eq!(running_colours(HOST, "app").len(), 1, "exactly one version runs");
}

/// A tunnel closed after the pushed key has expired on the instance (60 s):
/// the new tunnel pushes the key again before its handshake, which the
/// host then accepts; the deploy ends with one version serving.
#[test]
fn a_reconnect_after_the_key_expired_pushes_it_again() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    deploy(&instance, "v1");
    let action = instance.action(&image("v2")).input("observe-window", "75s");
    let mut child = action.spawn();
    crate::support::wait_until_serving(HOST, "v2", &mut child, Duration::from_secs(90));
    // The run's last push is now older than the 60 s the host keeps it.
    std::thread::sleep(Duration::from_secs(62));
    let from = eice_log_len();
    let closed = reqwest_close_tunnels();
    let out = child.wait_with_output().unwrap();
    let run = action.finish(out);
    let log = eice_log_since(from);
    assert!(closed >= 1, "a tunnel was open to close");
    let reopened = log.find("ALLOW tunnel").unwrap_or_else(|| panic!("no new tunnel:\n{log}"));
    let pushed = log.find(&format!("ALLOW SendSSHPublicKey {}", instance.instance_id));
    assert!(pushed.is_some_and(|p| p > reopened), "the key was pushed again for the new tunnel:\n{log}");
    assert!(!run.stdout.contains("ssh_auth_failed"), "{}", run.stdout);
    assert_one_version_serves(&run);
}

/// An instance whose VPC has no endpoint, and an endpoint named from
/// another VPC: the run names the instance, the VPC and the fix, before
/// any host is contacted.
#[test]
fn an_instance_without_an_endpoint_is_named() {
    // Its instance sits at host 6's address too: while it exists, the
    // stack's endpoint maps 127.0.0.7 to it, and a deploy of another test
    // there would see its pushed key refused.
    let _lock = crate::fleet::lock_hosts(&[6]);
    let run_tag = format!("eice-none-{}", crate::support::action::unique_run_id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = rt.block_on(eice_config());
    let ids = rt.block_on(moto_instances(&config, &run_tag, &[("127.0.0.7", "web")]));
    let action = |named: Option<&str>| {
        let a = Action::new()
            .inputs(shared_app_inputs(&[], &image("v1")))
            .without("INPUT_HOSTS")
            .without("INPUT_SSH-PRIVATE-KEY")
            .input("target", "ec2")
            .input("ssh-user", "root")
            .input("ec2-filters", &format!("Role=web,Run={run_tag}"))
            .input("ec2-connect", "instance-connect-endpoint")
            .moto()
            .env("AWS_ENDPOINT_URL_EC2", &eice_var("EICE_URL"))
            .env("AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT", &eice_var("EICE_URL"));
        match named {
            Some(id) => a.input("ec2-instance-connect-endpoint-id", id),
            None => a,
        }
    };
    let run = action(None).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("instance_connect_endpoint_not_found"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{}: no Instance Connect Endpoint is ready in vpc-", ids[0])),
        "{}",
        run.stdout
    );
    // An endpoint in another VPC, named.
    let other = Instance::new();
    let run = action(Some(&other.endpoint_id)).run();
    drop(other);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("an endpoint reaches its own VPC only"), "{}", run.stdout);
    rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let _ = ec2.terminate_instances().set_instance_ids(Some(ids)).send().await;
    });
}

/// The stack's half of the contract the action relies on: a key pushed by
/// SendSSHPublicKey logs in to the host for 60 s, then no more (checked
/// by the host's AuthorizedKeysCommand at each login).
#[test]
fn a_pushed_key_logs_in_for_60_seconds_only() {
    let _lock = crate::fleet::lock_hosts(&[6]);
    let instance = Instance::new();
    let key = deploy_action::targets::instance_connect::RunKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let pem = key.private().to_openssh(russh::keys::ssh_key::LineEnding::LF).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        std::io::Write::write_all(&mut f, pem.as_bytes()).unwrap();
    }
    let ssh = || {
        std::process::Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&path)
            .args(["-o", &format!("UserKnownHostsFile={}", stack_var("SSH_KNOWN_HOSTS"))])
            .args(["root@127.0.0.7", "true"])
            .status()
            .unwrap()
            .success()
    };
    assert!(!ssh(), "not pushed yet");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pushed = Instant::now();
    rt.block_on(async {
        let sdk = moto_config().await.into_builder().endpoint_url(eice_var("EICE_URL")).build();
        let client = aws_sdk_ec2instanceconnect::Client::new(&sdk);
        deploy_action::targets::instance_connect::key::push(
            &client,
            "127.0.0.7",
            &instance.instance_id,
            "root",
            &key,
            Duration::from_secs(10),
        )
        .await
        .expect("push");
    });
    assert!(ssh(), "pushed: accepted");
    std::thread::sleep(Duration::from_secs(50).saturating_sub(pushed.elapsed()));
    assert!(ssh(), "50 s after the push: still accepted");
    std::thread::sleep(Duration::from_secs(62).saturating_sub(pushed.elapsed()));
    assert!(!ssh(), "62 s after the push: refused");
}

/// `POST /_stack/close-tunnels`: how many tunnels the endpoint closed.
fn reqwest_close_tunnels() -> usize {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("{}/_stack/close-tunnels", eice_var("EICE_URL"))])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Connect time to host 6: plain SSH (its static key) against the
/// Instance Connect way (endpoint lookup done once; per connect: a
/// presigned tunnel, SendSSHPublicKey, the handshake inside the tunnel),
/// in one run. The figure goes to the README's Measured section.
#[test]
fn bench_connect_time_through_the_endpoint_against_plain_ssh() {
    use deploy_action::inputs::{AddressKind, Ec2Connect, Ec2Spec};
    use deploy_action::secrets::SecretValue;
    use deploy_action::targets::hosts::ssh::{Dial, Session, Via};
    const N: usize = 7;
    let _lock = crate::fleet::lock_hosts(&[6]);
    let key = SecretValue::new(std::fs::read_to_string(stack_var("SSH_KEY")).unwrap());
    let known = std::fs::read_to_string(stack_var("SSH_KNOWN_HOSTS")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dial = |via: Option<std::sync::Arc<dyn Via>>| Dial {
        name: "127.0.0.7",
        host: "127.0.0.7",
        port: 22,
        user: "root",
        private_key: &key,
        known_hosts: &known,
        timeout: Duration::from_secs(20),
        jump: None,
        via,
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let plain: Vec<Duration> = (0..N)
        .map(|_| {
            rt.block_on(async {
                let t = Instant::now();
                let s = Session::connect(dial(None)).await.expect("plain ssh");
                s.exec(&["true"], None).await.unwrap();
                let took = t.elapsed();
                s.close().await;
                took
            })
        })
        .collect();
    // A 1-host deploy each way, same host, same work (v1 → v2, v2 → v3).
    let plain_run =
        Action::new().inputs(shared_app_inputs(&["root@127.0.0.7:22".to_string()], &image("v1"))).run();
    assert_eq!(plain_run.code, Some(0), "{}", plain_run.stdout);
    let t = Instant::now();
    let plain_run =
        Action::new().inputs(shared_app_inputs(&["root@127.0.0.7:22".to_string()], &image("v2"))).run();
    let plain_deploy = t.elapsed();
    assert_eq!(plain_run.code, Some(0), "{}", plain_run.stdout);
    let instance = Instance::new();
    let t = Instant::now();
    deploy(&instance, "v3");
    let eice_deploy = t.elapsed();
    let spec = Ec2Spec {
        instance_ids: vec![],
        filters: vec![("Run".into(), vec![instance.run_tag.clone()])],
        address: AddressKind::PrivateIp,
        connect: Ec2Connect::Endpoint { id: None },
        console_host_keys: false,
    };
    let (tunnelled, first) = rt.block_on(async {
        let sdk = eice_config().await;
        let found = deploy_action::targets::instance_connect::discover_with(
            &sdk,
            Some(&eice_var("EICE_URL")),
            &spec,
            "root",
            22,
            None,
            Duration::from_secs(20),
        )
        .await
        .expect("discover");
        let via: std::sync::Arc<dyn Via> = found[0].1.clone();
        let mut out = Vec::new();
        for _ in 0..N {
            let t = Instant::now();
            let s = Session::connect(dial(Some(via.clone()))).await.expect("through the endpoint");
            s.exec(&["true"], None).await.unwrap();
            out.push(t.elapsed());
            s.close().await;
        }
        (out.clone(), out[0])
    });
    let (p, t) = (median(plain), median(tunnelled));
    let figure = format!(
        "connect + one command to host 6 (median of {N}): plain SSH {:.0} ms, through the Instance Connect Endpoint {:.0} ms ({:.1}x; first {:.0} ms with the key push)\n",
        p.as_secs_f64() * 1000.0,
        t.as_secs_f64() * 1000.0,
        t.as_secs_f64() / p.as_secs_f64(),
        first.as_secs_f64() * 1000.0
    ) + &format!(
        "1-host deploy to host 6 by the binary: plain SSH {:.2} s, through the endpoint {:.2} s ({:.2}x; includes DescribeInstances and DescribeInstanceConnectEndpoints)\n",
        plain_deploy.as_secs_f64(),
        eice_deploy.as_secs_f64(),
        eice_deploy.as_secs_f64() / plain_deploy.as_secs_f64()
    );
    eprint!("{figure}");
    crate::support::save_figures("instance-connect-connect-time", &figure);
}
