//! Several services on a host, each behind its own nginx server (its own
//! front door), set up on hosts 4 and 5 exactly as docs/services.md's "Several
//! services on a host" tells a user: its services file (with the stack's
//! images), its nginx servers and its "before the first deploy" commands.
//! Deployed by the built binary: the switch of each service is proven
//! through its own server, under load with zero dropped requests, and one
//! service failing after the switch puts every service back.
//!
//! Isolation: hosts 4 and 5 (the diagnosis test: 5) only, under [`lock_hosts`] like `fleet.rs`; the
//! shared `app` (nginx's default server) keeps serving untouched, and the
//! `shop` servers, upstream files and containers are removed at the end. (Host 6 is converted to EC2 Instance
//! Connect keys by another suite, so it is left out.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::fleet::{
    ClientTotals, PAUSE_MS, Wrk, WrkTotals, fleet_action, image, keepalive_client_as, lock_hosts,
};
use crate::support::action::Action;
use crate::support::{host_addr, host_exec, live_version, repo_root, stack_var};

const HOSTS: [usize; 2] = [4, 5];
const API: &str = "api.shop.example";
const REST: &str = "rest.shop.example";

/// The code block of docs/services.md that starts with the line `first`.
fn readme_block(first: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("docs/services.md")).unwrap();
    let at = readme.find(first).unwrap_or_else(|| panic!("docs/services.md has no block starting {first:?}"));
    readme[at..at + readme[at..].find("```").unwrap()].to_string()
}

/// Host `k`'s files, as its own `/` sees them.
fn host_path(k: usize, path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(stack_var("STACK_DIR"))
        .join(format!("hosts/h{k}/fs"))
        .join(path.trim_start_matches('/'))
}

/// Sets host `k` up as the README says: its nginx servers (on port 80, beside
/// the app's server of docs/hosts/user-data.sh) and the upstream files
/// created once.
fn set_up(k: usize) {
    let conf = readme_block("# /etc/nginx/conf.d/shop.conf (several services)");
    std::fs::write(host_path(k, "/etc/nginx/conf.d/shop.conf"), conf).unwrap();
    let script = readme_block("# before the first deploy (several services)");
    let out = std::process::Command::new(repo_root().join("scripts/stack/host-exec"))
        .args([&k.to_string(), "sh", "-ec", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "host {k}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Takes the `shop` app off hosts 4 and 5 however the test ends.
struct CleanUp;

impl Drop for CleanUp {
    fn drop(&mut self) {
        for k in HOSTS {
            host_exec(
                k,
                &[
                    "sh",
                    "-c",
                    "ids=$(docker ps -aq --filter label=deploy-action.app=shop); [ -z \"$ids\" ] || docker rm -f $ids >/dev/null; \
                     rm -f /etc/nginx/conf.d/shop.conf /etc/nginx/conf.d/upstreams/shop-api.conf /etc/nginx/conf.d/upstreams/shop-rest.conf; \
                     rm -rf /var/lib/deploy-action/locks/shop.lock; nginx -t -q && nginx -s reload",
                ],
            );
        }
    }
}

/// GET /version through host `k`'s nginx with `Host: server_name`.
fn version(k: usize, server_name: &str) -> String {
    use std::io::{Read, Write};
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect((host_addr(k).as_str(), 80))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /version HTTP/1.0\r\nHost: {server_name}\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") => {
            text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default()
        }
        Ok(text) => text.lines().next().unwrap_or("").to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// `shop`'s running containers on host `k`.
fn shop_containers(k: usize) -> Vec<String> {
    let mut names: Vec<String> =
        host_exec(k, &["docker", "ps", "--filter", "label=deploy-action.app=shop", "--format", "{{.Names}}"])
            .lines()
            .map(String::from)
            .collect();
    names.sort();
    names
}

/// A deploy of the README's services file with `api` on `api_image` and
/// `rest` on `rest_image` (the worker on the API's image, with the demo
/// image's own command), `rest` changed by `rest_extra` fields.
fn shop(api_image: &str, rest_image: &str, rest_extra: &[(&str, serde_yaml::Value)]) -> Action {
    let mut file: serde_yaml::Value =
        serde_yaml::from_str(&readme_block("# deploy/services.yml (several services on hosts)")).unwrap();
    for svc in file["services"].as_sequence_mut().unwrap() {
        let name = svc["name"].as_str().unwrap().to_string();
        let m = svc.as_mapping_mut().unwrap();
        m.insert("image".into(), if name == "rest" { rest_image } else { api_image }.into());
        m.remove("command");
        if name == "rest" {
            for (k, v) in rest_extra {
                m.insert((*k).into(), v.clone());
            }
        }
    }
    let action = fleet_action(&HOSTS, api_image).input("app", "shop").input("services-file", "services.yml");
    std::fs::write(action.dir.path().join("services.yml"), serde_yaml::to_string(&file).unwrap()).unwrap();
    action
}

/// What each service serves on each host: `(api, rest)` per host.
fn serving() -> Vec<(String, String)> {
    HOSTS.iter().map(|&k| (version(k, API), version(k, REST))).collect()
}

/// The loads on one service's front door (host 4): wrk keep-alive, wrk
/// `Connection: close`, and a keep-alive client that retries as RFC 9112
/// allows (see `fleet::zero_dropped_requests_through_twenty_deploys`).
struct Loads {
    keepalive: Wrk,
    fresh: Wrk,
    client: std::thread::JoinHandle<ClientTotals>,
}

impl Loads {
    fn start(server_name: &'static str, stop: &Arc<AtomicBool>) -> Loads {
        let addr = host_addr(HOSTS[0]);
        let url = format!("http://{addr}/version");
        let host = format!("Host: {server_name}");
        let keepalive = Wrk::start(server_name, &["-c2", "-H", &host], &url, PAUSE_MS);
        let fresh = Wrk::start(server_name, &["-c1", "-H", &host, "-H", "Connection: close"], &url, PAUSE_MS);
        let stop = stop.clone();
        let client = std::thread::spawn(move || keepalive_client_as(addr, server_name, stop));
        Loads { keepalive, fresh, client }
    }

    fn stop(self) -> (WrkTotals, WrkTotals, ClientTotals) {
        (self.keepalive.stop(), self.fresh.stop(), self.client.join().unwrap())
    }
}

/// `api` (v1) and `rest` (v3) on their own images, each behind its own
/// nginx server, and a worker, on two hosts: the first deploy, then
/// deploys that move each service to another image under load on both
/// front doors, then a deploy whose `rest` fails its health through its
/// front door after the switch: every service on every host goes back.
#[test]
fn several_services_each_behind_its_own_front_door() {
    let _hosts = lock_hosts(&HOSTS);
    let deploys: usize = std::env::var("FRONT_DOOR_DEPLOYS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let _clean = CleanUp;
    let app_before: Vec<String> = HOSTS.iter().map(|&k| live_version(k)).collect();
    for k in HOSTS {
        set_up(k);
    }

    // The first deploy: nothing of `shop` was live.
    let run = shop(&image("v1"), &image("v3"), &[]).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(
        serving(),
        vec![("v1".to_string(), "v3".to_string()); HOSTS.len()],
        "each service through its own server"
    );
    for k in HOSTS {
        let running = shop_containers(k);
        assert_eq!(running.len(), 3, "host {k}: api, rest and worker: {running:?}");
        let colour = running[0].rsplit('-').next().unwrap().to_string();
        assert!(running.iter().all(|n| n.ends_with(&colour)), "host {k}: one colour: {running:?}");
    }

    // Under load on both front doors of host 4.
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [Loads::start(API, &stop), Loads::start(REST, &stop)];
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut failures = Vec::new();
    for i in 0..deploys {
        let (api, rest) = if i % 2 == 0 { ("v2", "v1") } else { ("v1", "v3") };
        let t = Instant::now();
        let run = shop(&image(api), &image(rest), &[])
            .input("observe-window", "1s")
            .input("drain-time", "1s")
            .run();
        println!(
            "deploy {:>2}: api {api}, rest {rest}: exit {:?} in {:.1}s",
            i + 1,
            run.code,
            t.elapsed().as_secs_f64()
        );
        if run.code != Some(0) {
            failures.push(format!("deploy {} (api {api}, rest {rest}): {}", i + 1, run.stdout));
            break;
        }
        let want = vec![(api.to_string(), rest.to_string()); HOSTS.len()];
        if serving() != want {
            failures.push(format!("deploy {}: serving {:?}, not {want:?}", i + 1, serving()));
            break;
        }
    }
    let before_failure = serving();

    // `rest` passes its checks on the candidate (three 200s), then answers
    // 500 to every health check through its front door: observe_failed.
    let flaky = r#"mkdir -p /tmp/w/cgi-bin && echo flaky > /tmp/w/version && printf '#!/bin/sh\nn=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n\nif [ $n -gt 3 ]; then echo "Status: 500"; echo; echo failing; else echo "Status: 200"; echo; echo ok; fi\n' > /tmp/w/cgi-bin/health && chmod +x /tmp/w/cgi-bin/health && exec httpd -f -p 8080 -h /tmp/w"#;
    let t = Instant::now();
    let failed = shop(
        &image("v3"),
        &image("v2"),
        &[
            ("command", serde_yaml::to_value(["sh", "-c", flaky]).unwrap()),
            ("health-check-path", "/cgi-bin/health".into()),
        ],
    )
    .input("observe-window", "8s")
    .input("observe-failures", "3")
    .input("drain-time", "1s")
    .run();
    println!("failing deploy: exit {:?} in {:.1}s", failed.code, t.elapsed().as_secs_f64());
    let deploy_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let [api_load, rest_load] = loads.map(Loads::stop);

    let mut report = format!(
        "=== front doors: {deploys} deploys + 1 rolled back, 3 services on hosts 4 and 5, load through 127.0.0.5 in {:.0}s\n",
        deploy_time.as_secs_f64()
    );
    for (door, (ka, fr, rc)) in [(API, &api_load), (REST, &rest_load)] {
        report += &crate::fleet::load_report(&format!("{door} "), ka, fr, rc);
    }
    print!("{report}");
    crate::support::save_figures("front-doors", &report);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every service back on every host, from one colour.
    assert_eq!(failed.code, Some(1), "{}", failed.stdout);
    assert_eq!(failed.output("status"), Some("failure"), "{}", failed.stdout);
    assert!(
        failed.stdout.contains("observe_failed") && failed.stdout.contains("of service rest"),
        "{}",
        failed.stdout
    );
    assert_eq!(serving(), before_failure, "api and rest both back on every host");
    for k in HOSTS {
        assert_eq!(
            shop_containers(k).len(),
            3,
            "host {k}: the candidates are gone: {:?}",
            shop_containers(k)
        );
    }
    // The shared app, nginx's default server, never moved.
    assert_eq!(HOSTS.iter().map(|&k| live_version(k)).collect::<Vec<_>>(), app_before);

    for (door, (ka, fr, rc)) in [(API, &api_load), (REST, &rest_load)] {
        assert!(ka.requests > 0 && fr.requests > 0 && rc.ok > 0, "{door}: every load ran");
        assert!(
            ka.bodies.len() >= 2 && rc.bodies.len() >= 2,
            "{door}: both versions answered: {:?}",
            rc.bodies
        );
        for t in [ka, fr] {
            assert_eq!(t.non_2xx(), 0, "{door}: non-2xx answers");
            for k in ["connect", "write", "timeout", "status"] {
                assert_eq!(t.error(k), 0, "{door}: wrk {k} errors");
            }
        }
        assert_eq!(fr.error("read"), 0, "{door}: wrk with Connection: close lost requests");
        assert_eq!((rc.non_2xx, rc.dropped, rc.connect_errors), (0, 0, 0), "{door}: {rc:?}");
        assert!(
            ka.error("read") <= 2 * (deploys as u64 + 2),
            "{door}: more keep-alive closes than one per connection per switch: {}",
            ka.error("read")
        );
    }
    // Each door answered from its own service only: `api` never ran the
    // flaky build, `rest` never ran v2.
    assert!(
        !api_load.0.bodies.contains_key("flaky") && !api_load.2.bodies.contains_key("flaky"),
        "{:?}",
        api_load.2.bodies
    );
    assert!(
        !rest_load.0.bodies.contains_key("v2") && !rest_load.2.bodies.contains_key("v2"),
        "{:?}",
        rest_load.2.bodies
    );
}

/// A newcomer's first deploy: `app` left to default to the repository's
/// name (`shop-api`), so the action writes
/// `/etc/nginx/conf.d/upstreams/shop-api.conf`, which host 5's nginx does
/// not include (it includes `upstreams/app.conf`). The error says so, with
/// the line to add, instead of "nginx may have refused the new
/// configuration"; the file is removed again and the host's app untouched.
#[test]
fn an_upstream_file_nginx_does_not_include_is_named_with_the_line_to_add() {
    let _hosts = lock_hosts(&[5]);
    let before = live_version(5);
    let run = fleet_action(&[5], &image("v2"))
        .without("INPUT_APP")
        .input("blue-port", "8281")
        .input("green-port", "8282")
        .input("ssh-timeout", "5s")
        .run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    for want in [
        "nginx_upstream_not_included",
        "nginx does not include /etc/nginx/conf.d/upstreams/shop-api.conf",
        "add `include /etc/nginx/conf.d/upstreams/shop-api.conf;`",
        "nginx includes /etc/nginx/conf.d/upstreams/app.conf from that directory instead",
    ] {
        assert!(run.stdout.contains(want), "{want}:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("nginx may have refused"), "{}", run.stdout);
    assert!(
        !host_path(5, "/etc/nginx/conf.d/upstreams/shop-api.conf").exists(),
        "the file written is removed"
    );
    assert!(
        host_exec(5, &["docker", "ps", "--format", "{{.Names}}"])
            .lines()
            .all(|n| !n.starts_with("shop-api-")),
        "the candidate is removed"
    );
    assert_eq!(live_version(5), before, "the host's app still serves");
}
