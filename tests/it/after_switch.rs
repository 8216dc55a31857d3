//! What users see after the switch, on the real stack: the traffic nginx
//! served (its access log on the host) judged against `max-error-rate` and
//! `max-latency` while real requests go through nginx.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::deploy::hosts_action;
use crate::support::{host_addr, http_get, live_version, shared_app_lock, stack_var, summary_table};

fn image(v: &str) -> String {
    stack_var(&format!("IMAGE_{}", v.to_uppercase()))
}

/// A candidate command: `/health` and `/version` answer as usual (so every
/// check the action makes by itself passes), `/cgi-bin/api` runs `api`.
fn app_with_api(version: &str, api: &str) -> String {
    let script = format!(
        "mkdir -p /tmp/w/cgi-bin && echo ok > /tmp/w/health && echo {version} > /tmp/w/version && printf '%s\\n' '#!/bin/sh' '{api}' > /tmp/w/cgi-bin/api && chmod +x /tmp/w/cgi-bin/api && exec httpd -f -p 8080 -h /tmp/w"
    );
    serde_json::to_string(&["sh", "-c", &script]).unwrap()
}

/// Users: `threads` clients sending `GET path` through host `k`'s nginx
/// until dropped; counts what they got.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(k: usize, path: &'static str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, sent) = (stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = http_get(&host_addr(k), path);
                        sent.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Load { stop, sent, threads }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().for_each(|t| t.join().unwrap());
        self.sent.load(Ordering::Relaxed)
    }
}

/// The "What users saw" row of the summary for host 1's traffic.
fn traffic_row(summary: &str) -> Vec<String> {
    summary_table(summary, "### What users saw")
        .into_iter()
        .find(|r| r[0] == "traffic through nginx")
        .unwrap_or_else(|| panic!("no traffic row in:\n{summary}"))
}

/// `(requests, 5xx)` from a row's figure, `N request(s), M 5xx (…)`.
fn counts(row: &[String]) -> (u64, u64) {
    let words: Vec<&str> = row[2].split_whitespace().collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

/// A candidate whose `/health` answers 200 while 30% of real requests get
/// a 500: the error rate through nginx breaches `max-error-rate: 10%` and
/// the deploy rolls back; a healthy one with the same traffic commits.
#[test]
fn real_traffic_failing_at_30_percent_rolls_back_while_health_passes() {
    let _lock = shared_app_lock();
    let run = hosts_action(1, &image("v1")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    // (Each its own image: the same image with another command would be
    // "nothing to do".)
    let deploy = |version: &str, api: &str| {
        hosts_action(1, &image(if version == "good" { "v2" } else { "v3" }))
            .input("command", &app_with_api(version, api))
            .input("observe-window", "6s")
            .input("health-check-interval", "500ms")
            .input("max-error-rate", "10%")
            .input("min-requests", "10")
    };

    // Healthy: every request answers 200.
    let load = Load::start(1, "/cgi-bin/api", 3);
    let run = deploy("good", r"echo Status: 200; echo; echo fine").run();
    let sent = load.stop();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(1), "good");
    let row = traffic_row(&run.summary);
    let (requests, errors) = counts(&row);
    assert!(requests >= 10 && requests <= sent, "{row:?} of {sent} sent");
    assert_eq!((errors, row[3].as_str()), (0, "within the limits"), "{row:?}");

    // 3 of every 10 requests fail; /health still answers 200.
    let failing = r"n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; if [ $((n % 10)) -lt 3 ]; then echo Status: 500; echo; echo boom; else echo Status: 200; echo; echo fine; fi";
    let load = Load::start(1, "/cgi-bin/api", 3);
    let run = deploy("bad", failing).run();
    load.stop();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("error_rate_exceeded"), "{}", run.stdout);
    assert!(run.stdout.contains("above max-error-rate 10.0%"), "{}", run.stdout);
    assert_eq!(live_version(1), "good", "rolled back to the previous version");
    let row = traffic_row(&run.summary);
    let (requests, errors) = counts(&row);
    let rate = errors as f64 / requests as f64;
    crate::support::save_figures(
        "traffic-error-rate",
        &format!("healthy candidate: {}\nfailing 30%: {row:?}", sent),
    );
    // About 30% (the CGI's counter races under concurrent requests, so
    // not exactly), and above the 10% limit that rolled it back.
    assert!(requests >= 10 && (0.15..=0.6).contains(&rate), "{row:?}");
    assert_eq!(row[3], "breach: rolled back");
}

/// The same through latency: a candidate answering real requests in 2 s
/// breaches `max-latency: 1s` (the p95 of `$request_time` in the log).
#[test]
fn real_traffic_answered_slowly_rolls_back_on_latency() {
    let _lock = shared_app_lock();
    let run = hosts_action(1, &image("v1")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let load = Load::start(1, "/cgi-bin/api", 6);
    let run = hosts_action(1, &image("v2"))
        .input("command", &app_with_api("slow", r"sleep 2; echo Status: 200; echo; echo late"))
        .input("observe-window", "8s")
        .input("health-check-interval", "500ms")
        .input("max-latency", "1s")
        .input("min-requests", "5")
        .run();
    load.stop();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("latency_exceeded"), "{}", run.stdout);
    assert!(run.stdout.contains("above max-latency 1000ms"), "{}", run.stdout);
    assert_eq!(live_version(1), "v1");
    let row = traffic_row(&run.summary);
    crate::support::save_figures("traffic-latency", &format!("{row:?}"));
    assert!(row[2].contains("p95 2") && row[3] == "breach: rolled back", "{row:?}");
}

/// The limits are checked with the other inputs: all named at once,
/// nothing contacted; on a cluster they are refused (no nginx log there).
#[test]
fn traffic_limits_are_checked_before_any_contact() {
    let run = hosts_action(1, &image("v2"))
        .input("max-error-rate", "10")
        .input("max-latency", "fast")
        .input("min-requests", "0")
        .input("nginx-access-log", "logs/access.log")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for input in ["max-error-rate", "max-latency", "min-requests", "nginx-access-log"] {
        assert!(run.stdout.contains(&format!("input '{input}'")), "{input}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("connected"), "{}", run.stdout);
    let run = crate::support::action::Action::new()
        .input("target", "kubernetes")
        .input("image", "example.invalid/web:v2")
        .input("deployments", "web")
        .input("max-error-rate", "10%")
        .input("github-deployments", "false")
        .run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("input 'max-error-rate': reads nginx's access log"), "{}", run.stdout);
}

/// A `path` smoke test naming a service that does not exist was sent to the
/// first service instead; now it is refused with the inputs, naming the
/// services there are, with nothing contacted.
#[test]
fn a_smoke_test_naming_no_service_is_refused_before_any_contact() {
    let tests = "- name: orders\n  path: /orders\n  service: api\n- name: home\n  url: https://shop.example/\n  service: web\n";
    let run = hosts_action(1, &image("v2")).input("smoke-tests", tests).run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("'orders' names service 'api', which is not a service: there is no services-file"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("'home' names service 'web', which only a 'path' test uses"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("connected"), "{}", run.stdout);
}

/// Smoke tests on hosts: `path` ones go to each candidate before the
/// switch and through nginx after it, `url` ones once after it. A passing
/// set commits; a `url` test failing after the switch rolls back; a `path`
/// test failing on the candidate switches nothing. A header carrying an
/// SSM secret reaches the app, and the answer quoting it is redacted.
#[test]
fn smoke_tests_gate_the_switch_and_roll_back_after_it() {
    let _lock = shared_app_lock();
    let run = hosts_action(1, &image("v1")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let front = format!("http://{}/version", host_addr(1));

    let passing = format!(
        "- {{name: health, path: /health, body: ok, max-latency: 5s}}\n- {{name: front door, url: '{front}', body-regex: '^v2'}}\n"
    );
    let run = hosts_action(1, &image("v2")).input("smoke-tests", &passing).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(1), "v2");
    let rows = summary_table(&run.summary, "### What users saw");
    let shown: Vec<String> = rows.iter().map(|r| format!("{} | {}", r[0], r[3])).collect();
    assert_eq!(
        shown,
        ["smoke test 'health' | passed", "smoke test 'health' | passed", "smoke test 'front door' | passed"],
        "the candidate, then through nginx, then the front door once: {rows:?}"
    );
    assert!(rows[0][2].contains("(candidate)") && rows[1][2].contains("(through nginx)"), "{rows:?}");

    // Fails only once live: rolled back.
    let failing_live = format!("- {{name: front door, url: '{front}', body: 'v9', status: 200}}\n");
    let run = hosts_action(1, &image("v3")).input("smoke-tests", &failing_live).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("smoke_test_failed"), "{}", run.stdout);
    assert!(run.stdout.contains("smoke test 'front door' failed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("HTTP 200 in") && run.stdout.contains("(the body lacks \"v9\")"),
        "{}",
        run.stdout
    );
    assert_eq!(live_version(1), "v2", "rolled back");
    assert!(
        run.summary.contains("smoke test 'front door'") && run.summary.contains("| failed |"),
        "{}",
        run.summary
    );

    // Fails on the candidate: nothing switches.
    let failing_candidate = "- {name: version, path: /version, body: v9}\n";
    let run = hosts_action(1, &image("v3")).input("smoke-tests", failing_candidate).run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("GET /version (candidate)"), "{}", run.stdout);
    assert!(!run.stdout.contains("switching nginx"), "{}", run.stdout);
    assert_eq!(live_version(1), "v2");
}

/// A smoke test's header takes an SSM secret by name: the app receives it,
/// and an answer quoting it is redacted wherever it is shown.
#[test]
fn a_smoke_header_carries_an_ssm_secret_that_no_output_shows() {
    let _lock = shared_app_lock();
    let run = hosts_action(1, &image("v1")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let token = format!("tok-{}-Zq8", crate::support::action::unique_run_id());
    let name = format!("/smoke-{}/token", crate::support::action::unique_run_id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
        ssm.put_parameter()
            .name(&name)
            .value(&token)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    });
    // The candidate answers 403 quoting the header it got.
    let command = app_with_api("v2", r#"echo Status: 403; echo; echo "got $HTTP_X_TOKEN""#);
    let run = hosts_action(1, &image("v2"))
        .input("command", &command)
        .input("ssm-parameters", &format!("SMOKE_TOKEN={name}"))
        .input("smoke-tests", "- {name: api, path: /cgi-bin/api, headers: {X-Token: '${SMOKE_TOKEN}'}}\n")
        .moto()
        .run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("HTTP 403 in") && run.stdout.contains("got ***"),
        "the header was sent: {}",
        run.stdout
    );
    // Only the mask command itself may carry it.
    let all = run.all_text();
    let shown: Vec<&str> = all.lines().filter(|l| !l.starts_with("::add-mask::")).collect();
    assert!(!shown.join("\n").contains(&token), "the secret leaked:\n{}", shown.join("\n"));
    assert!(run.stdout.contains(&format!("::add-mask::{token}")), "masked on arrival");
    assert_eq!(live_version(1), "v1");
    // A header naming a secret SSM did not return stops before any change.
    let run = hosts_action(1, &image("v2"))
        .input("smoke-tests", "- {name: api, path: /, headers: {X-Token: '${NOT_FETCHED}'}}\n")
        .run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("smoke_secret_missing") && run.stdout.contains("${NOT_FETCHED}"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("connected"), "{}", run.stdout);
}

/// `pre-migrate-command` runs before the migration; after a rollback of a
/// deploy whose migration succeeded, `migrate-rollback-command` runs once
/// from the new image, after traffic is back. Its failure is loud and
/// leaves the traffic rollback done; a failing pre-migrate stops the
/// migration.
#[test]
fn migrate_rollback_runs_after_a_rollback_and_pre_migrate_before_the_migration() {
    let _lock = shared_app_lock();
    let run = hosts_action(1, &image("v1")).run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let sh = |script: &str| serde_json::to_string(&["sh", "-c", script]).unwrap();
    let bad_deploy = |rollback: &str| {
        hosts_action(1, &image("broken"))
            .input("health-check-timeout", "3s")
            .input("pre-migrate-command", &sh("echo backup point made at $(cat /etc/app/version)"))
            .input("migrate-command", &sh("echo schema applied by $(cat /etc/app/version)"))
            .input("migrate-rollback-command", &sh(rollback))
    };
    let run = bad_deploy("echo schema reverted by $(cat /etc/app/version)").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(live_version(1), "v1");
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s:?} not in:\n{}", run.stdout));
    assert!(at("backup point made at broken") < at("schema applied by broken"), "{}", run.stdout);
    assert!(at("schema applied by broken") < at("rollback — every unit"), "{}", run.stdout);
    assert!(
        at("rollback — every unit") < at("schema reverted by broken"),
        "from the new image, after: {}",
        run.stdout
    );
    let rows = summary_table(&run.summary, "### Timeline");
    assert!(rows.iter().any(|r| r[0] == "migrate-rollback" && r[3] == "ok"), "{rows:?}");

    // Its failure is loud; the traffic rollback stands.
    let run = bad_deploy("echo cannot revert >&2; exit 4").run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(run.output("status"), Some("failure"));
    assert!(run.stdout.contains("::error title=deploy-action (migrate_rollback_failed)::"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot revert"), "{}", run.stdout);
    assert_eq!(live_version(1), "v1");

    // A failing pre-migrate: no migration, nothing switched, no rollback command.
    let run = hosts_action(1, &image("v2"))
        .input("pre-migrate-command", &sh("echo no space for the backup >&2; exit 3"))
        .input("migrate-command", &sh("echo schema applied"))
        .input("migrate-rollback-command", &sh("echo schema reverted"))
        .run();
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("pre-migrate-command `sh -c"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("schema applied") && !run.stdout.contains("schema reverted"),
        "{}",
        run.stdout
    );
    assert_eq!(live_version(1), "v1");
}
