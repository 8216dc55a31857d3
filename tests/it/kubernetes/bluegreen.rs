//! `strategy: blue-green` on a cluster: colours, the selector flip
//! verified by EndpointSlices, workers, signals, the plan, smoke tests.

use super::*;

impl Ns {
    /// A Service `name` selecting the pods of Deployment `name`.
    pub(crate) fn service(&self, name: &str) {
        self.service_for(name, name);
    }

    /// A Service `name` selecting the pods of Deployment `deployment`.
    pub(crate) fn service_for(&self, name: &str, deployment: &str) {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {deployment}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n",
            ns = self.0
        );
        kubectl_stdin(&["apply", "-f", "-"], &yaml);
    }

    /// A blue-green run reading its Deployments from `file` (a services
    /// file written into the run's workspace).
    pub(crate) fn blue_green_file(&self, file: &str, image: Option<&str>) -> Action {
        let a = self
            .blue_green("", image.unwrap_or(""))
            .without("INPUT_DEPLOYMENTS")
            .input("services-file", "services.yml");
        let a = if image.is_none() { a.without("INPUT_IMAGE") } else { a };
        std::fs::write(a.path("services.yml"), file).unwrap();
        a
    }

    pub(crate) fn selector(&self, service: &str) -> serde_json::Value {
        let s = kubectl_ok(&["-n", &self.0, "get", "service", service, "-o", "jsonpath={.spec.selector}"]);
        serde_json::from_str(&s).unwrap()
    }

    /// The pods the Service's EndpointSlices list as ready.
    pub(crate) fn endpoint_pods(&self, service: &str) -> Vec<String> {
        let out = kubectl_ok(&[
            "-n",
            &self.0,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
            "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name}{\"\\n\"}{end}",
        ]);
        let mut pods: Vec<String> = out.lines().map(String::from).collect();
        pods.sort();
        pods
    }

    pub(crate) fn replicas(&self, name: &str) -> String {
        self.get(name, "{.spec.replicas}")
    }

    pub(crate) fn blue_green(&self, deployments: &str, image: &str) -> Action {
        self.action(deployments)
            .input("strategy", "blue-green")
            .input("observe-window", "2s")
            .input("drain-time", "1s")
            .input("image", image)
    }
}

/// Blue-green: the candidate colour is fully available before the live
/// Service's selector flips; afterwards its EndpointSlices list only the
/// new pods and the old colour sits at zero. A second deploy goes to the
/// other colour, and `mode: rollback` flips back to the one at zero.
#[test]
fn kubernetes_blue_green_flips_only_once_the_candidate_is_ready_and_rolls_back() {
    let ns = Ns::new("bg");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    let before = ns.endpoint_pods("web");
    assert_eq!(before.len(), 2);

    let run = ns.blue_green("web:app", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(
        at("deployment \"web-blue\" successfully rolled out") < at("selector now deploy-action/colour=blue"),
        "{}",
        run.stdout
    );
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert!(ns.selector("web").get("pod-template-hash").is_none());
    let pods = ns.endpoint_pods("web");
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p.starts_with("web-blue-")), "only the new colour: {pods:?}");
    assert_eq!(image_of(&ns, "web-blue"), "example.invalid/web:v2");
    assert_eq!(ns.replicas("web"), "0", "the old version is kept at zero");
    ns.rollout_status("web-blue", &[]).assert_ok();
    assert!(run.summary.contains("web-blue live (2 replica(s)), web at 0"), "{}", run.summary);

    let run = ns.blue_green("web:app", "example.invalid/web:v3").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert!(ns.endpoint_pods("web").iter().all(|p| p.starts_with("web-green-")));
    assert_eq!(ns.replicas("web-blue"), "0");
    assert_eq!(run.output("previous-image"), Some("example.invalid/web:v2"));

    // Rollback: the colour at zero comes back up, then the flip.
    let run = ns.blue_green("web:app", "").without("INPUT_IMAGE").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    let pods = ns.endpoint_pods("web");
    assert!(!pods.is_empty() && pods.iter().all(|p| p.starts_with("web-blue-")), "{pods:?}");
    assert_eq!(image_of(&ns, "web-blue"), "example.invalid/web:v2");
    assert_eq!(ns.replicas("web-green"), "0");
    ns.rollout_status("web-blue", &[]).assert_ok();

    // v4 fails its smoke test after the flip to green (its pods are
    // healthy): flipped back, and green, at zero, holds v3 again, the
    // release it held. So the next `mode: rollback` brings back v3, never
    // the release that failed.
    let (bad, _) = answering(503, "broken");
    let tests = format!("- {{name: live, url: '{bad}/'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v4").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("selector now deploy-action/colour=green"), "{}", run.stdout);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(ns.replicas("web-green"), "0");
    assert_eq!(image_of(&ns, "web-green"), "example.invalid/web:v3", "{}", run.stdout);
    assert!(run.stdout.contains("back to the release it held"), "{}", run.stdout);
    let run = ns.blue_green("web:app", "").without("INPUT_IMAGE").input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(run.output("image"), Some("example.invalid/web:v3"), "{}", run.stdout);
    ns.rollout_status("web-green", &[]).assert_ok();
    assert_eq!(image_of(&ns, "web-green"), "example.invalid/web:v3");
}

/// Four services switched together: the fourth's candidate never becomes
/// ready, so none of the four Services changes selector (and kubectl's
/// verdict on that candidate is the same failure).
#[test]
fn kubernetes_blue_green_four_services_none_flips_when_one_is_never_ready() {
    let ns = Ns::new("bg4");
    for name in ["a", "b", "c", "d"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 10);
        ns.service(name);
    }
    // d's template is broken from now on: its running pods keep serving,
    // but any pod made from it (the candidate's) never becomes ready.
    kubectl_ok(&[
        "-n",
        &ns.0,
        "patch",
        "deployment",
        "d",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"kwok.deploy-action/behavior":"never-ready"}}}}}"#,
    ]);
    let before: Vec<serde_json::Value> = ["a", "b", "c", "d"].iter().map(|s| ns.selector(s)).collect();
    // One file lists the four (the dashboard's shape).
    let file = "services:\n".to_string()
        + &["a", "b", "c", "d"].map(|n| format!("  - {{name: {n}, container: app}}\n")).concat();
    let action = ns.blue_green_file(&file, Some("example.invalid/web:v2"));
    let child = action.spawn();
    // kubectl watches the same candidate while the action does.
    ns.until(30, "the candidate d-blue", || {
        kubectl(&["-n", &ns.0, "get", "deployment", "d-blue"]).status.success()
    });
    let kubectl_verdict = Verdict(ns.spawn_rollout_status("d-blue").wait_with_output().unwrap());
    let run = action.finish(child.wait_with_output().unwrap());
    assert_status(&run, "failure", 1);
    kubectl_verdict.assert_failed("exceeded its progress deadline");
    assert!(run.stdout.contains("deployment \"d-blue\" exceeded its progress deadline"), "{}", run.stdout);
    assert!(!run.stdout.contains("selector now"), "{}", run.stdout);
    let after: Vec<serde_json::Value> = ["a", "b", "c", "d"].iter().map(|s| ns.selector(s)).collect();
    assert_eq!(before, after, "no Service changed");
    for s in ["a", "b", "c"] {
        assert!(ns.endpoint_pods(s).iter().all(|p| !p.contains("-blue-")), "{s} serves only the old pods");
        assert!(ns.gone("deployment", &format!("{s}-blue")), "the candidate this run made is removed");
    }
}

/// A services file names each Deployment's live and preview Services and
/// its own image: the names need not follow the Deployment's, and every
/// entry's image lands on its own candidate.
#[test]
fn kubernetes_blue_green_services_file_names_deployments_services_and_images() {
    let ns = Ns::new("bgfile");
    ns.deployment("api-server", "example.invalid/api:v1", 2, 60);
    ns.service_for("api", "api-server");
    ns.service_for("api-staging", "api-server");
    ns.deployment("frontend", "example.invalid/frontend:v1", 1, 60);
    ns.service("frontend");
    let file = "services:\n  - name: api\n    deployment: api-server\n    container: app\n    service: api\n    preview-service: api-staging\n    image: example.invalid/api:v2\n  - name: frontend\n    image: example.invalid/frontend:v2\n";
    let run = ns.blue_green_file(file, None).run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    // The preview is checked before any live flip.
    assert!(
        at(&format!("service {}/api-staging", ns.0)) < at("selector now deploy-action/colour=blue"),
        "{}",
        run.stdout
    );
    for (service, deployment, image) in [
        ("api", "api-server", "example.invalid/api:v2"),
        ("frontend", "frontend", "example.invalid/frontend:v2"),
    ] {
        assert_eq!(ns.selector(service)["deploy-action/colour"], "blue", "{service}: {}", run.stdout);
        let pods = ns.endpoint_pods(service);
        assert!(
            !pods.is_empty() && pods.iter().all(|p| p.starts_with(&format!("{deployment}-blue-"))),
            "{service}: {pods:?}"
        );
        assert_eq!(image_of(&ns, &format!("{deployment}-blue")), image);
        assert_eq!(ns.replicas(deployment), "0", "{deployment} kept at zero");
    }
    assert_eq!(ns.selector("api-staging")["deploy-action/colour"], "blue");
    assert_eq!(ns.replicas("api-server-blue"), "2");
    // The record's image is the first entry's.
    assert_eq!(run.output("image"), Some("example.invalid/api:v2"), "{}", run.stdout);
}

/// Blue-green with a worker (`proxy: false`, no Service): the web's colours
/// and Service flip as before; the worker is rolled in place once the
/// candidate is ready, before the flip. It is undone whenever the deploy
/// goes back (its own crash, a smoke test failing after the flip), and
/// `mode: rollback` undoes it beside the flip back.
#[test]
fn kubernetes_blue_green_rolls_workers_in_place_and_undoes_them_with_the_flip() {
    let ns = Ns::new("bgwork");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let file = |v: &str, jobs: &str| {
        format!(
            "services:\n  - {{name: web, container: app, image: example.invalid/web:{v}}}\n  - {{name: jobs, container: app, proxy: false, image: example.invalid/jobs:{jobs}}}\n"
        )
    };
    let plan = ns.blue_green_file(&file("v2", "v2"), None).input("mode", "plan").run();
    assert_eq!(plan.code, Some(0), "{}", plan.stdout);
    let worker = format!("deployment {}/jobs: worker, rolled in place to example.invalid/jobs:v2", ns.0);
    assert!(plan.stdout.contains(&worker), "{}", plan.stdout);
    assert!(plan.stdout.contains("web-blue: 1 replica(s) of example.invalid/web:v2"), "{}", plan.stdout);
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v1", "a plan changes nothing");

    let run = ns.blue_green_file(&file("v2", "v2"), None).run();
    assert_status(&run, "success", 0);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(
        at("container app set to example.invalid/jobs:v2") < at("selector now deploy-action/colour=blue")
    );
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert!(run.summary.contains("worker rolled out"), "{}", run.summary);
    ns.rollout_status("jobs", &[]).assert_ok();

    // The worker crashes: nothing flips, the worker is undone.
    let run = ns.blue_green_file(&file("v3", "crashloop"), None).run();
    assert_status(&run, "failure", 1);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{}", run.stdout);
    assert!(ns.gone("deployment", "web-green"), "the candidate this run made is removed");
    assert!(run.summary.contains("worker rolled back"), "{}", run.summary);

    // A smoke test failing after the flip: flipped back, the worker undone,
    // then the down migration, from the web's spec and image although the
    // worker comes first in the file.
    let worker_first = "services:\n  - {name: jobs, container: app, proxy: false, image: example.invalid/jobs:v3}\n  - {name: web, container: app, image: example.invalid/web:v3}\n";
    let run = ns
        .blue_green_file(worker_first, None)
        .input("smoke-tests", "- name: front door\n  url: http://127.0.0.1:9/\n")
        .input("migrate-command", r#"["./manage", "migrate"]"#)
        .input("migrate-rollback-command", r#"["./manage", "migrate", "down"]"#)
        .run();
    assert_status(&run, "failure", 1);
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    assert!(at("selector now deploy-action/colour=green") < at("Rollback: workers undone"));
    assert!(at("Rollback: workers undone") < at("web-migrate-rollback-"));
    assert!(
        run.stdout.contains(r#"running ["./manage","migrate","down"] from example.invalid/web:v3"#),
        "{}",
        run.stdout
    );
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2");

    // A good one, then `mode: rollback`: the web back on blue, the worker
    // back to its previous revision.
    let run = ns.blue_green_file(&file("v4", "v4"), None).run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v4");
    let run = ns.blue_green_file(&file("v4", "v4"), None).input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{}", run.stdout);
    assert!(run.stdout.contains("worker rolled back to revision"), "{}", run.stdout);

    // A worker the rolled-back deploy did not roll is left as it is.
    kubectl_ok(&["-n", &ns.0, "set", "image", "deployment/jobs", "app=example.invalid/jobs:by-hand"]);
    kubectl_ok(&[
        "-n",
        &ns.0,
        "annotate",
        "--overwrite",
        "deployment/jobs",
        "deploy-action/deploy-id=someone-else",
    ]);
    ns.rollout_status("jobs", &[]).assert_ok();
    let run = ns.blue_green_file(&file("v4", "v4"), None).input("mode", "rollback").run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "green");
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:by-hand");
    assert!(run.stdout.contains("worker left as it is"), "{}", run.stdout);

    // A missing worker: named, before anything changes.
    let before = ns.selector("web");
    let run = ns.blue_green_file(&file("v5", "v5").replace("name: jobs", "name: gone"), None).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("does not create them"), "{}", run.stdout);
    assert_eq!(ns.selector("web"), before);
}

/// A services file for a cluster is checked with the other inputs: the
/// hosts-only fields, only workers in a blue-green switch, a file beside
/// `deployments`, an entry without an image; all named at once, nothing
/// contacted.
#[test]
fn kubernetes_services_file_problems_are_named_before_any_contact() {
    let file = "services:\n  - {name: api, blue-port: 8081, green-port: 8082, env: {A: b}}\n  - {name: worker, proxy: false, image: example.invalid/worker:v2}\n  - {name: web, service: Not_A_Name, image: example.invalid/web:v2}\n  - {name: web, image: example.invalid/web:v2}\n";
    let a = Action::new()
        .input("target", "kubernetes")
        .input("strategy", "blue-green")
        .input("deployments", "api")
        .input("services-file", "services.yml")
        .input("kubeconfig", "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n")
        .input("github-deployments", "false");
    std::fs::write(a.path("services.yml"), file).unwrap();
    let run = a.run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    for want in [
        "blue-port, green-port, env only apply to target 'hosts' and 'ec2'",
        "service must",
        "the name is used twice",
        "'api' has no image",
        "input 'deployments': cannot be combined with 'services-file'",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    // A worker beside Services is rolled in place; workers alone have
    // nothing to flip.
    assert!(!run.stdout.contains("'worker'"), "{}", run.stdout);
    let a = a.without("INPUT_DEPLOYMENTS");
    std::fs::write(
        a.path("services.yml"),
        "services:\n  - {name: worker, proxy: false, image: example.invalid/worker:v2}\n",
    )
    .unwrap();
    let run = a.run();
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("every entry here has 'proxy: false'"), "{}", run.stdout);
}

/// SIGTERM between two flips of a two-service switch: the flips are
/// finished, then every Service goes back to the old colour, within 7 s.
#[test]
fn kubernetes_blue_green_sigterm_between_flips_leaves_every_service_on_one_colour() {
    let ns = Ns::new("bgterm");
    for name in ["api", "web"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 60);
        ns.service(name);
    }
    // A first blue-green deploy: both on blue.
    let run = ns.blue_green("api:app, web:app", "example.invalid/web:v2").run();
    assert_status(&run, "success", 0);
    let action = ns.blue_green("api:app, web:app", "example.invalid/web:v3").input("observe-window", "30s");
    let (child, _kill, log) = crate::fleet::spawn_until(
        &action,
        "selector now deploy-action/colour=green",
        Duration::from_secs(60),
    );
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (run, took) = crate::fleet::finish_within(&action, child, Duration::from_secs(20));
    let stdout = log.all();
    assert!(took < Duration::from_secs(7), "took {took:?}: {stdout}");
    assert_eq!(run.code, Some(130), "{stdout}");
    let colours: Vec<String> = ["api", "web"]
        .iter()
        .map(|s| ns.selector(s)["deploy-action/colour"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(colours, ["blue", "blue"], "{stdout}");
    for s in ["api", "web"] {
        ns.until(30, "the old colour's endpoints", || {
            let pods = ns.endpoint_pods(s);
            !pods.is_empty() && pods.iter().all(|p| p.starts_with(&format!("{s}-blue-")))
        });
    }
}

/// The same signal over a real round trip to the API server (200 ms, a
/// cluster in another region; every request and watch event pays it):
/// past the flips of two Services and a worker rolled in place, SIGTERM
/// still ends within 7 s with both Services back on the old colour, the
/// worker undone and the candidates at zero. Every step of the way back
/// shares one budget (`wayback.rs`, unit-tested with paused time).
#[test]
fn kubernetes_blue_green_sigterm_over_real_latency_undoes_flips_and_worker_within_7s() {
    let ns = Ns::new("bglat");
    for name in ["api", "web"] {
        ns.deployment(name, "example.invalid/web:v1", 1, 60);
        ns.service(name);
    }
    ns.deployment("jobs", "example.invalid/jobs:v1", 1, 60);
    let file = |v: &str| {
        format!(
            "services:\n  - {{name: api, container: app, image: example.invalid/web:{v}}}\n  - {{name: web, container: app, image: example.invalid/web:{v}}}\n  - {{name: jobs, container: app, proxy: false, image: example.invalid/jobs:{v}}}\n"
        )
    };
    assert_status(&ns.blue_green_file(&file("v2"), None).run(), "success", 0);

    let server = stack_var("K8S_SERVER");
    let api: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let relay = crate::support::latency::DelayProxy::start(api, Duration::from_millis(100));
    let kubeconfig = std::fs::read_to_string(stack_var("K8S_KUBECONFIG"))
        .unwrap()
        .replace(&server, &format!("https://127.0.0.1:{}", relay.port));
    let action =
        ns.blue_green_file(&file("v3"), None).input("kubeconfig", &kubeconfig).input("observe-window", "60s");
    let (child, _kill, log) = crate::fleet::spawn_until(&action, "Observe 60s", Duration::from_secs(180));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let (run, took) = crate::fleet::finish_within(&action, child, Duration::from_secs(30));
    let stdout = log.all();
    assert!(took < Duration::from_secs(7), "took {took:?}: {stdout}");
    assert_eq!(run.code, Some(130), "{stdout}");
    for s in ["api", "web"] {
        assert_eq!(ns.selector(s)["deploy-action/colour"], "blue", "{s}: {stdout}");
        assert!(ns.gone("deployment", &format!("{s}-green")), "{s}: {stdout}");
    }
    assert_eq!(image_of(&ns, "jobs"), "example.invalid/jobs:v2", "{stdout}");
    assert!(!stdout.contains("rollback_timeout"), "{stdout}");
    ns.rollout_status("jobs", &[]).assert_ok();
}

/// `mode: plan` with blue-green: a server-side dry run and the steps;
/// nothing changes (resourceVersions kept).
#[test]
fn kubernetes_blue_green_plan_touches_nothing() {
    let ns = Ns::new("bgplan");
    ns.deployment("web", "example.invalid/web:v1", 2, 60);
    ns.service("web");
    let versions = || {
        kubectl_ok(&[
            "-n",
            &ns.0,
            "get",
            "deployments,services",
            "-o",
            "jsonpath={.items[*].metadata.resourceVersion}",
        ])
    };
    let before = versions();
    let run = ns.blue_green("web", "example.invalid/web:v2").input("mode", "plan").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "deployment {}/web-blue: 2 replica(s) of example.invalid/web:v2 (blue-green candidate)",
            ns.0
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("flips to deploy-action/colour=blue"), "{}", run.stdout);
    // The steps: the strategy's one list (the hosts' too), in the run's order.
    let at = |s: &str| run.stdout.find(s).unwrap_or_else(|| panic!("{s}: {}", run.stdout));
    let order = [
        at("apply the candidate colour of each"),
        at("watch each candidate to every replica available"),
        at("flip every live Service's selector"),
        at("observe the candidates for"),
        at("then scale the old colour to zero"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", run.stdout);
    assert_eq!(versions(), before);
    assert!(kubectl(&["-n", &ns.0, "get", "deployment", "web-blue"]).status.code() != Some(0));
}

/// Smoke tests around a blue-green flip: a failing `preview-url` test
/// leaves every selector as it was; a failing `url` test after the flip
/// flips back; passing ones commit, each result in the summary.
#[test]
fn kubernetes_blue_green_smoke_tests_gate_and_undo_the_flip() {
    let ns = Ns::new("bgsmoke");
    ns.deployment("web", "example.invalid/web:v1", 1, 60);
    ns.service("web");
    let (good, good_hits) = answering(200, "v2 ok");
    let (bad, bad_hits) = answering(503, "upstream down");
    let before = ns.selector("web");

    let tests = format!("- {{name: preview, preview-url: '{bad}/health'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("smoke_test_failed") && run.stdout.contains("HTTP 503"), "{}", run.stdout);
    assert!(!run.stdout.contains("selector now"), "{}", run.stdout);
    assert_eq!(ns.selector("web"), before, "nothing flipped");
    assert_eq!(bad_hits.load(std::sync::atomic::Ordering::Relaxed), 1);

    let tests = format!("- {{name: live, url: '{bad}/'}}\n");
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "failure", 1);
    assert!(run.stdout.contains("selector now deploy-action/colour=blue"), "{}", run.stdout);
    assert!(run.stdout.contains("smoke test 'live' failed"), "{}", run.stdout);
    assert!(ns.selector("web").get("deploy-action/colour").is_none(), "flipped back: {}", ns.selector("web"));
    ns.until(30, "the old pods behind web again", || {
        let pods = ns.endpoint_pods("web");
        !pods.is_empty() && pods.iter().all(|p| !p.starts_with("web-blue-"))
    });

    let tests = format!(
        "- {{name: preview, preview-url: '{good}/health', body: ok}}\n- {{name: live, url: '{good}/', body-regex: '^v2'}}\n"
    );
    let run = ns.blue_green("web:app", "example.invalid/web:v2").input("smoke-tests", &tests).run();
    assert_status(&run, "success", 0);
    assert_eq!(ns.selector("web")["deploy-action/colour"], "blue");
    assert_eq!(good_hits.load(std::sync::atomic::Ordering::Relaxed), 2);
    let rows = crate::support::summary_table(&run.summary, "### What users saw");
    assert_eq!(rows.iter().filter(|r| r[3] == "passed").count(), 2, "{rows:?}");
}
