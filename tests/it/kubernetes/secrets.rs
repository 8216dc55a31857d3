//! The app's secrets as an immutable Secret, and the migration Jobs
//! (first, failing, rolled back).

use super::*;

/// SSM values become one immutable Secret per secret set, referenced by
/// `envFrom`: a re-run changes nothing, a rotation rolls the pods onto a
/// new Secret while the previous revision keeps its own, and Secrets no
/// ReplicaSet uses any more are removed.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secrets_are_an_immutable_secret_and_a_rotation_rolls_the_pods() {
    let ns = Ns::new("secrets");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    // The user's own envFrom entry stays; one old ReplicaSet is kept.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/revisionHistoryLimit","value":1},{"op":"add","path":"/spec/template/spec/containers/0/envFrom","value":[{"configMapRef":{"name":"web-config"}}]}]"#,
    ]);
    ns.rollout_status("web", &[]).assert_ok();
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-{}/web/", unique_run_id());
    put_ssm(&ssm, &prefix, &[("db/password", "first-Pa55:word"), ("api_key", "k-1")]).await;
    let deploy =
        || ns.action("web:app").moto().input("ssm-paths", &prefix).input("image", "example.invalid/web:v2");

    let run = deploy().run();
    assert_status(&run, "success", 0);
    let fp = run.output("secrets-fingerprint").unwrap();
    let ours = format!("web-secrets-{}", &fp[..12]);
    assert_eq!(env_from(&ns), ["-".to_string(), ours.clone()], "the user's entry, then ours");
    assert_eq!(
        ns.get("web", "{.spec.template.spec.containers[0].envFrom[0].configMapRef.name}"),
        "web-config"
    );
    let get_secret = |name: &str, path: &str| {
        kubectl_ok(&["-n", &ns.0, "get", "secret", name, "-o", &format!("jsonpath={path}")])
    };
    assert_eq!(get_secret(&ours, "{.immutable}"), "true");
    assert_eq!(get_secret(&ours, "{.metadata.labels.deploy-action/app}"), "web");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = b64.decode(get_secret(&ours, "{.data.DB_PASSWORD}")).unwrap();
    assert_eq!(value, b"first-Pa55:word");
    for v in ["first-Pa55:word", "k-1"] {
        assert!(!shows(&run, v), "{v} leaked: {}", run.stdout);
    }
    assert_eq!(revision(&ns), "3");
    ns.rollout_status("web", &[]).assert_ok();

    // Same image, same secrets: nothing changes.
    let rerun = deploy().run();
    assert_status(&rerun, "success", 0);
    assert!(rerun.stdout.contains("already runs example.invalid/web:v2"), "{}", rerun.stdout);
    assert!(rerun.stdout.contains("exists (same secret versions)"), "{}", rerun.stdout);
    assert_eq!(revision(&ns), "3");
    assert_eq!(rerun.output("secrets-fingerprint"), Some(fp));

    // A rotation: a new Secret, the pods roll, the previous one is kept
    // for the previous revision.
    put_ssm(&ssm, &prefix, &[("db/password", "second-Pa55:word")]).await;
    let rotated = deploy().run();
    assert_status(&rotated, "success", 0);
    let fp2 = rotated.output("secrets-fingerprint").unwrap().to_string();
    assert_ne!(fp2, fp);
    let second = format!("web-secrets-{}", &fp2[..12]);
    assert_eq!(env_from(&ns), ["-".to_string(), second.clone()]);
    assert_eq!(revision(&ns), "4");
    assert_eq!(b64.decode(get_secret(&second, "{.data.DB_PASSWORD}")).unwrap(), b"second-Pa55:word");
    assert_eq!(get_secret(&ours, "{.metadata.name}"), ours, "the previous revision's Secret is kept");
    let verdict = ns.rollout_status("web", &[]);
    verdict.assert_ok();

    // A third rotation: revision 3's ReplicaSet leaves the history
    // (revisionHistoryLimit 1), so its Secret goes.
    put_ssm(&ssm, &prefix, &[("api_key", "k-3")]).await;
    let third = deploy().run();
    assert_status(&third, "success", 0);
    ns.until(30, "one old ReplicaSet left", || {
        kubectl_ok(&["-n", &ns.0, "get", "rs", "-l", "app=web", "-o", "name"]).lines().count() == 2
    });
    // The controller may drop the ReplicaSet just after the run's own
    // clean-up: a no-op run cleans again.
    let again = deploy().run();
    assert_status(&again, "success", 0);
    let left = kubectl_ok(&["-n", &ns.0, "get", "secret", "-l", "deploy-action/app=web", "-o", "name"]);
    assert!(!left.contains(&ours), "the first Secret should be gone: {left}");
    assert!(left.contains(&second), "the previous revision's Secret is kept: {left}");
    assert_eq!(left.lines().count(), 2, "{left}");
    // The user's entry survived every rotation.
    assert_eq!(
        ns.get("web", "{.spec.template.spec.containers[0].envFrom[0].configMapRef.name}"),
        "web-config"
    );
}

/// The migration runs as a Job from the new image with the app's Secret;
/// it succeeds before the rollout, and a failing one rolls nothing.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_migration_job_runs_first_and_a_failing_one_rolls_nothing() {
    let ns = Ns::new("migrate");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    let ssm = aws_sdk_ssm::Client::new(&crate::support::moto_config().await);
    let prefix = format!("/k8s-mig-{}/web/", unique_run_id());
    put_ssm(&ssm, &prefix, &[("db_url", "postgres://u:Secr3t@db/web")]).await;
    let action = |image: &str| {
        ns.action("web:app")
            .moto()
            .input("ssm-paths", &prefix)
            .input("migrate-command", r#"["./manage", "migrate"]"#)
            .input("image", image)
    };

    // What the migration's pod writes (kwok serves it as the container's
    // log): the secret among its lines, and the last line the one to read.
    let lines: String = (1..=25).map(|i| format!("applying migration {i:03}\n")).collect::<String>()
        + "connecting to postgres://u:Secr3t@db/web\nERROR: relation \"orders\" already exists\n";
    ns.pod_logs(&lines);

    // kwok fails a Never-restarting pod whose image is tagged `fail`.
    let run = action("example.invalid/web:fail").run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("migration_failed"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("job {}/web-migrate-", ns.0)), "{}", run.stdout);
    assert!(run.stdout.contains("last log lines"), "{}", run.stdout);
    // The last 20 lines, redacted: the error line is there, the first
    // migrations are not, the secret is masked.
    assert!(run.stdout.contains("ERROR: relation \"orders\" already exists"), "{}", run.stdout);
    assert!(run.stdout.contains("connecting to ***"), "{}", run.stdout);
    assert!(!run.stdout.contains("applying migration 001"), "{}", run.stdout);
    assert!(run.summary.contains("already exists"), "{}", run.summary);
    assert!(!shows(&run, "Secr3t"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v1");
    assert_eq!(revision(&ns), "1");
    assert!(run.summary.contains("unchanged"), "{}", run.summary);
    ns.until(30, "the failed Job deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });

    // A migration that succeeds, then the rollout.
    let run = action("example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let job = run.stdout.find("web-migrate-").expect("the Job is named");
    let succeeded = run.stdout.find(": succeeded").expect("the Job succeeded");
    let rolled = run.stdout.find("container app set to example.invalid/web:v2").expect("then the image");
    assert!(job < succeeded && succeeded < rolled, "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    ns.until(30, "the Job deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });
    ns.rollout_status("web", &[]).assert_ok();

    // A pre-migrate command: its own Job, before the migration's.
    let run =
        action("example.invalid/web:v3").input("pre-migrate-command", r#"["./manage", "backup"]"#).run();
    assert_status(&run, "success", 0);
    let pre = run.stdout.find("web-pre-migrate-").expect("the pre-migrate Job");
    let job = run.stdout.find("web-migrate-").expect("the migration Job");
    assert!(pre < job, "{}", run.stdout);
    assert!(run.stdout.contains(r#"running ["./manage","backup"]"#), "{}", run.stdout);
}

/// `migrate-rollback-command` on a cluster: the migration succeeded, then
/// one Deployment's rollout failed and both were undone; the down
/// migration then runs as its own Job from the new image. A deploy that
/// succeeds, or one whose migration failed, runs none.
#[test]
fn kubernetes_migrate_rollback_runs_as_a_job_after_the_undo() {
    let ns = Ns::new("migback");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let action = |web: &str, jobs: &str| {
        let a = ns
            .action("")
            .without("INPUT_DEPLOYMENTS")
            .input("services-file", "services.yml")
            .input("migrate-command", r#"["./manage", "migrate"]"#)
            .input("migrate-rollback-command", r#"["./manage", "migrate", "down"]"#);
        let file = format!(
            "services:\n  - {{name: web, container: app, image: {web}}}\n  - {{name: jobs, container: app, proxy: false, image: {jobs}}}\n"
        );
        std::fs::write(a.path("services.yml"), file).unwrap();
        a
    };
    let down_job = format!("job {}/web-migrate-rollback-", ns.0);

    let ok = action("example.invalid/web:v2", "example.invalid/jobs:v2").run();
    assert_status(&ok, "success", 0);
    assert!(!ok.stdout.contains(&down_job), "a deploy that succeeds runs no down migration: {}", ok.stdout);

    // `jobs` crashes: both are undone, then the down migration runs.
    let run = action("example.invalid/web:v3", "example.invalid/jobs:crashloop").run();
    assert_status(&run, "failure", 1);
    let undone = run.stdout.rfind("rolled back to revision").expect("the undo");
    let job = run.stdout.find(&down_job).expect("the down migration's Job");
    assert!(undone < job, "after the undo: {}", run.stdout);
    assert!(
        run.stdout.contains(r#"running ["./manage","migrate","down"] from example.invalid/web:v3"#),
        "from the new image: {}",
        run.stdout
    );
    assert!(run.summary.contains("migration rolled back"), "{}", run.summary);
    assert!(!run.stdout.contains("migrate_rollback_failed"), "{}", run.stdout);
    assert_eq!(image_of(&ns, "web"), "example.invalid/web:v2");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");
    ns.until(30, "the Jobs deleted", || {
        kubectl_ok(&["-n", &ns.0, "get", "jobs", "-o", "name"]).trim().is_empty()
    });

    // A migration that fails changed nothing to roll back.
    let failed = action("example.invalid/web:fail", "example.invalid/jobs:v3").run();
    assert_status(&failed, "failure", 1);
    assert!(failed.stdout.contains("migration_failed"), "{}", failed.stdout);
    assert!(!failed.stdout.contains(&down_job), "{}", failed.stdout);
}

/// Every strategy runs the migration first: a failing one stops a
/// blue-green deploy before any colour exists, and a canary before any
/// canary pod.
#[test]
fn kubernetes_blue_green_and_canary_run_the_migration_first() {
    let ns = Ns::new("bgmig");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    let before = ns.selector("web");
    for strategy in ["blue-green", "canary"] {
        let mut action = ns
            .action("web:app")
            .input("strategy", strategy)
            .input("migrate-command", r#"["migrate"]"#)
            .input("image", "example.invalid/web:fail");
        if strategy == "canary" {
            // A step one replica can express (10% of it is refused first).
            action = action.input("canary-steps", "50,100");
        }
        let run = action.run();
        assert_status(&run, "failure", 1);
        assert!(run.stdout.contains("migration_failed"), "{strategy}: {}", run.stdout);
        assert_eq!(ns.selector("web"), before, "{strategy}");
        assert!(ns.gone("deployment", "web-blue") && ns.gone("deployment", "web-canary"), "{strategy}");
    }
    // And a good one goes on to the switch.
    let run =
        ns.blue_green("web:app", "example.invalid/web:v2").input("migrate-command", r#"["migrate"]"#).run();
    assert_status(&run, "success", 0);
    let (migrated, switched) =
        (run.stdout.find(": succeeded").unwrap(), run.stdout.find("selector now").unwrap());
    assert!(migrated < switched, "{}", run.stdout);
}
