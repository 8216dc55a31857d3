//! What validation does across the areas: the runner's defaults, every
//! problem at once, the rollout's spans and counts, the environment, old
//! spellings.

use std::time::Duration;

use crate::inputs::given::Given;

#[test]
fn the_defaults_the_runner_passes_are_not_refused() {
    // The runner passes every declared default (ssh-user, proxy-url,
    // blue-port, ec2-address...) whatever the target.
    assert_eq!(Given::kubernetes().with_defaults().problems(), Vec::<String>::new());
    let file =
        "services:\n  - {name: web, blue-port: 8181, green-port: 8182}\n  - {name: worker, proxy: false}\n";
    let hosts = Given::hosts().with_defaults().set("services-file", "s.yml").file("s.yml", file);
    assert_eq!(
        hosts.problems(),
        Vec::<String>::new(),
        "blue-port's default is no conflict with a services file"
    );
}

#[test]
fn every_problem_is_named_at_once_and_nothing_is_half_read() {
    let p = Given::hosts()
        .set("strategy", "purple")
        .set("health-check-interval", "soon")
        .set("observe-failures", "0")
        .set("blue-port", "99999")
        .set("pre-migrate-command", "[\"db\", \"check\"]")
        .set("timeout", "5m")
        .problems();
    let inputs: Vec<&str> = p.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        inputs,
        ["strategy", "health-check-interval", "observe-failures", "pre-migrate-command", "blue-port"],
        "{p:?}"
    );
    assert_eq!(p[3], "pre-migrate-command: goes with 'migrate-command', which is not set");
}

#[test]
fn the_rollouts_spans_and_counts_have_defaults_and_bounds() {
    let r = Given::hosts().ok().rollout;
    assert_eq!(
        (r.observe_window, r.drain, r.canary_steps, r.max_parallel),
        (Duration::from_secs(30), Duration::from_secs(10), vec![10, 50, 100], 4)
    );
    let canary = || Given::hosts().set("strategy", "canary");
    let r = canary().set("canary-steps", "5%, 25%, 100%").set("drain-time", "1500ms").ok().rollout;
    assert_eq!((r.canary_steps, r.drain), (vec![5, 25, 100], Duration::from_millis(1500)));
    // Only a cluster's canary may stop short, for a later promote.
    let p = canary().set("canary-steps", "50,10").problems();
    assert_eq!(p, ["canary-steps: must be increasing percentages from 1 to 100, like 10,50,100"]);
    let p = canary().set("canary-steps", "10,50").problems();
    assert_eq!(
        p,
        [
            "canary-steps: must end at 100 (only target 'kubernetes' can stop a canary short, for a later mode 'promote')"
        ]
    );
    let k8s = Given::kubernetes().set("strategy", "canary").set("canary-steps", "10,50");
    assert_eq!(k8s.ok().rollout.canary_steps, [10, 50]);
    // A migration bound the run's own timeout would cut short.
    let p = Given::hosts()
        .set("migrate-command", "[\"db\", \"migrate\"]")
        .set("timeout", "10m")
        .set("migrate-timeout", "10m")
        .problems();
    assert_eq!(
        p,
        [
            "migrate-timeout: must leave at least 60s of 'timeout' (600s) for the rest of the deploy; it is 600s"
        ]
    );
}

#[test]
fn the_environment_is_required() {
    // `Given` names one; a workflow that names none is refused, with
    // nothing defaulted to production.
    let p = Given::hosts().with_defaults().set("environment", "").problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("environment: is required: name the GitHub environment"), "{p:?}");
    assert_eq!(Given::hosts().with_defaults().set("environment", " qa ").ok().environment, "qa");
}

#[test]
fn an_old_spelling_is_read_with_a_warning() {
    let with = |extra: &[(&str, &str)]| {
        let mut g = Given::hosts().with_defaults().set("migrate-command", "[\"migrate\"]");
        for (k, v) in extra {
            g = g.set(k, v);
        }
        g
    };
    // The new spellings; nothing deprecated.
    let i = with(&[("migrate-timeout", "3m"), ("health-check-max-latency", "250ms")]).ok();
    assert_eq!(i.rollout.migration_timeout, Duration::from_secs(180));
    assert_eq!(i.health.max_response_time, Some(Duration::from_millis(250)));
    assert!(i.deprecated.is_empty(), "{:?}", i.deprecated);
    // The old ones: the same values, and a warning each naming the new name.
    let i = with(&[("migration-timeout", "3m"), ("health-check-max-response-time", "250ms")]).ok();
    assert_eq!(i.rollout.migration_timeout, Duration::from_secs(180));
    assert_eq!(i.health.max_response_time, Some(Duration::from_millis(250)));
    let warned: Vec<String> = i.deprecated.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        warned,
        [
            "input 'health-check-max-response-time': is deprecated: it is read as 'health-check-max-latency'; rename it to 'health-check-max-latency'",
            "input 'migration-timeout': is deprecated: it is read as 'migrate-timeout'; rename it to 'migrate-timeout'",
        ]
    );
    // A bad value is named by the spelling that was written.
    let p = with(&[("migration-timeout", "soon")]).problems();
    assert!(p.iter().any(|p| p.starts_with("migration-timeout: ")), "{p:?}");
    // Both spellings: which was meant is not guessed.
    let p = with(&[("migration-timeout", "3m"), ("migrate-timeout", "4m")]).problems();
    assert_eq!(
        p,
        [
            "migration-timeout: is the old spelling of 'migrate-timeout', which is set too: set only 'migrate-timeout'"
        ]
    );
    // The new one at its default (as the runner passes it) is not "both".
    let i = with(&[("migration-timeout", "3m"), ("migrate-timeout", "10m")]).ok();
    assert_eq!(i.rollout.migration_timeout, Duration::from_secs(180));
}
