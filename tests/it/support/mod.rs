//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod act;
pub mod action;
pub mod analysis;
pub mod github_server;
pub mod latency;
pub mod notify_receiver;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// An in-memory runner log: clones share one buffer, so a test hands one
/// to `Runner::new` and reads the other back.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A runner (no secrets known yet, no file commands) writing here.
    pub fn runner(&self) -> deploy_action::runner::Runner {
        deploy_action::runner::Runner::new(
            Box::new(self.clone()),
            deploy_action::redact::Redactor::new(),
            None,
            None,
        )
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A page of the docs, `README.md` or `docs/<page>.md`: what a user copies
/// from it is what the tests use.
pub fn doc(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The part of the page `rel` under the heading line `heading` (e.g.
/// `## Access and RBAC`), up to the next heading of the same or a higher
/// level. Lines inside fenced blocks (`# deploy/services.yml`) are not
/// headings.
pub fn doc_section(rel: &str, heading: &str) -> String {
    let page = doc(rel);
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut out = None::<String>;
    let mut fenced = false;
    for line in page.lines() {
        let is_heading = !fenced && line.starts_with('#');
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        match &mut out {
            None if is_heading && line == heading => out = Some(String::new()),
            Some(_) if is_heading && line.chars().take_while(|&c| c == '#').count() <= level => break,
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out.unwrap_or_else(|| panic!("{rel} has no heading {heading:?}"))
}

/// The fenced block `marker` is in, from `marker` on (a block's own first
/// line, such as `# deploy/services.yml`), or else the body of the first
/// fenced block after `marker`.
pub fn fenced_after(text: &str, marker: &str) -> String {
    let at = text.find(marker).unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"));
    let rest = &text[at..];
    let inside = text[..at].lines().filter(|l| l.trim_start().starts_with("```")).count() % 2 == 1;
    let body = if inside {
        rest
    } else {
        let open = &rest[rest.find("```").expect("a fenced block after the marker")..];
        &open[open.find('\n').unwrap() + 1..]
    };
    body[..body.find("```").unwrap()].to_string()
}

/// The local stack's settings, from `.stack/env` written by
/// `scripts/stack/up`. Panics with the fix when the stack is not up: the
/// tests never skip silently.
pub fn stack() -> &'static HashMap<String, String> {
    static STACK: OnceLock<HashMap<String, String>> = OnceLock::new();
    STACK.get_or_init(|| {
        let dir =
            std::env::var("STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".stack"));
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the local stack is not up ({}: {e}); run scripts/stack/up or the README's test command",
                path.display()
            )
        });
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    })
}

/// One value of the stack's env file.
pub fn stack_var(key: &str) -> String {
    stack().get(key).cloned().unwrap_or_else(|| panic!("{key} missing from .stack/env"))
}

/// Tests that deploy the stack's shared app (`app` behind each host's
/// nginx) take this lock, so they don't switch each other's traffic.
pub fn shared_app_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The inputs of a workflow step deploying the stack's shared `app` to
/// `hosts` (stack specs, `root@127.0.0.K:22`; the first is the fleet's
/// barrier) with quick health checks and short observe/drain windows.
/// Every test that deploys the shared app starts from this list.
pub fn shared_app_inputs(hosts: &[String], image: &str) -> Vec<(&'static str, String)> {
    let read = |key: &str| std::fs::read_to_string(stack_var(key)).unwrap();
    vec![
        ("target", "hosts".into()),
        ("app", "app".into()),
        ("image", image.into()),
        ("hosts", hosts.join("\n")),
        ("ssh-private-key", read("SSH_KEY")),
        ("ssh-known-hosts", read("SSH_KNOWN_HOSTS")),
        ("registry-username", stack_var("REGISTRY_USERNAME")),
        ("registry-password", stack_var("REGISTRY_PASSWORD")),
        ("github-deployments", "false".into()),
        ("health-check-interval", "200ms".into()),
        ("health-check-timeout", "20s".into()),
        ("observe-window", "1s".into()),
        ("drain-time", "500ms".into()),
    ]
}

/// The first `n` hosts of the stack, as `shared_app_inputs` takes them.
pub fn first_hosts(n: usize) -> Vec<String> {
    stack_var("HOSTS").split(',').take(n).map(String::from).collect()
}

/// Keeps a test's measured figures in `target/tmp/figures/<name>.txt`;
/// `scripts/test` prints every such file once the tests have run, so the
/// figures reach CI's log even though passing tests' output is captured.
pub fn save_figures(name: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("figures");
    std::fs::create_dir_all(&dir).expect("figures dir");
    std::fs::write(dir.join(format!("{name}.txt")), text).expect("write figures");
}

/// An AWS SDK configuration for the stack's moto server.
pub async fn moto_config() -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(
        stack_var("AWS_ACCESS_KEY_ID"),
        stack_var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "stack",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(stack_var("AWS_REGION")))
        .endpoint_url(stack_var("AWS_ENDPOINT_URL"))
        .credentials_provider(creds)
        .load()
        .await
}

/// Starts one moto EC2 instance per `(private IP, Role tag)`, in a loopback
/// subnet so that the IP is a stack host, each also tagged `Run=<run>` (moto's
/// state outlives a test: a unique `run` keeps tests apart). Returns the ids.
pub async fn moto_instances(
    config: &aws_config::SdkConfig,
    run: &str,
    hosts: &[(&str, &str)],
) -> Vec<String> {
    let tags: Vec<[(&str, &str); 2]> =
        hosts.iter().map(|(_, role)| [("Role", *role), ("Run", run)]).collect();
    let hosts: Vec<(&str, &[(&str, &str)])> =
        hosts.iter().zip(&tags).map(|((ip, _), t)| (*ip, &t[..])).collect();
    tagged_instances(config, &hosts).await
}

/// Starts one moto EC2 instance per `(private IP, tags)` (the IPs stack
/// hosts' addresses), all in one new loopback VPC and subnet. Returns the ids.
pub async fn tagged_instances(
    config: &aws_config::SdkConfig,
    hosts: &[(&str, &[(&str, &str)])],
) -> Vec<String> {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let ec2 = aws_sdk_ec2::Client::new(config);
    let vpc = ec2.create_vpc().cidr_block("127.0.0.0/16").send().await.expect("moto accepts a loopback VPC");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc_id).cidr_block("127.0.0.0/24").send().await.expect("subnet");
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).unwrap().to_string();
    let mut ids = Vec::new();
    for (ip, tags) in hosts {
        let spec = tags
            .iter()
            .fold(TagSpecification::builder().resource_type(ResourceType::Instance), |b, (k, v)| {
                b.tags(Tag::builder().key(*k).value(*v).build())
            })
            .build();
        let out = ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet_id)
            .private_ip_address(*ip)
            .tag_specifications(spec)
            .send()
            .await
            .expect("run instance");
        ids.push(out.instances()[0].instance_id().unwrap().to_string());
    }
    ids
}

/// Runs a command inside simulated host `k` (1-based).
pub fn host_exec(k: usize, args: &[&str]) -> String {
    let out = std::process::Command::new(repo_root().join("scripts/stack/host-exec"))
        .arg(k.to_string())
        .args(args)
        .output()
        .expect("host-exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Address of simulated host `k`.
pub fn host_addr(k: usize) -> String {
    format!("127.0.0.{}", k + 1)
}

/// A plain HTTP GET (HTTP/1.0, no keep-alive): `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{addr}:80").parse().unwrap(),
        std::time::Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The version host `k`'s nginx serves now.
pub fn live_version(k: usize) -> String {
    match http_get(&host_addr(k), "/version") {
        Ok((200, body)) => body,
        Ok((code, _)) => format!("HTTP {code}"),
        Err(e) => format!("error {e}"),
    }
}

/// Waits until host `k`'s nginx serves `v` while `deploy` (the run
/// switching it) goes on; panics after `bound`, or if the run ends first.
pub fn wait_until_serving(k: usize, v: &str, deploy: &mut std::process::Child, bound: std::time::Duration) {
    let t0 = std::time::Instant::now();
    while live_version(k) != v {
        assert!(t0.elapsed() < bound, "{v} never switched in on host {k}");
        assert!(deploy.try_wait().unwrap().is_none(), "the action ended before {v} switched in");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The rows of the job summary's table under `heading` (`### Hosts`,
/// `### Timeline`), each as its trimmed cells.
pub fn summary_table(summary: &str, heading: &str) -> Vec<Vec<String>> {
    summary
        .split(heading)
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Names of the running containers of app `app` on host `k`.
pub fn running_colours(k: usize, app: &str) -> Vec<String> {
    let mut names: Vec<String> = host_exec(k, &["docker", "ps", "--format", "{{.Names}}"])
        .lines()
        .filter(|n| n.starts_with(&format!("{app}-")))
        .map(String::from)
        .collect();
    names.sort();
    names
}
