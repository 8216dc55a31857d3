//! The hosts' side: the services file (or the one service of the inputs),
//! the hosts and SSH, EC2 discovery and how to connect to what it finds.

use super::*;

/// The services (one from the inputs, or a services file) and the
/// migration command.
// long: the two shapes of the hosts' services (a file, or the one service of the inputs) side by side, with the checks that tell them apart.
pub(super) fn services(
    c: &mut Check,
    raw: &RawInputs,
    ctx: &RawContext,
    b: &Basics,
    health_path: String,
    version_path: String,
) -> (Vec<Service>, Option<Vec<String>>) {
    let (app, image, mode) = (&b.app, &b.image, b.mode);
    let container_port = c.or("container-port", &raw.container_port, 8080, g::port);
    let restart_policy =
        c.or("restart-policy", &raw.restart_policy, RestartPolicy::UnlessStopped, RestartPolicy::parse);
    let env_pairs = raw.env.as_deref().map(|t| pairs("env", t, c, |v| Ok(v.to_string()))).unwrap_or_default();
    let command = c.parse("command", &raw.command, g::command);
    let migrate_command = c.parse("migrate-command", &raw.migrate_command, g::command);
    // On a cluster the services file lists Deployments: see `kubernetes`.
    let services = if let Some(file) =
        raw.services_file.as_ref().filter(|_| b.target != TargetKind::Kubernetes)
    {
        for (name, set) in
            [("blue-port", &raw.blue_port), ("green-port", &raw.green_port), ("command", &raw.command)]
        {
            if Check::given(name, set) {
                c.problem(name, "cannot be combined with 'services-file'; set it per service in the file");
            }
        }
        match workspace_file(c, ctx, "services-file", file) {
            Some(text) => {
                let d = Defaults {
                    app,
                    image: image.as_ref(),
                    container_port,
                    health_path: Some(health_path.clone()),
                    version_path: Some(version_path.clone()),
                    restart_policy,
                };
                let mut svcs = services::from_file(&text, &d, &mut c.problems);
                for s in &mut svcs {
                    s.env.extend(env_pairs.iter().cloned());
                }
                svcs
            }
            None => vec![],
        }
    } else {
        let blue = c.or("blue-port", &raw.blue_port, 8081, g::port);
        let green = c.or("green-port", &raw.green_port, 8082, g::port);
        if blue == green {
            c.problem("green-port", "must differ from blue-port");
        }
        // `mode: rollback` without an image: the pipeline fills the image in
        // from the last good deployment.
        image
            .clone()
            .or_else(|| {
                (mode == Mode::Rollback).then(|| g::image(ROLLBACK_PENDING).expect("valid placeholder"))
            })
            .map(|image| {
                vec![Service {
                    name: String::new(),
                    image,
                    container_port,
                    blue_port: blue,
                    green_port: green,
                    health_path: Some(health_path.clone()),
                    version_path: Some(version_path.clone()),
                    env: env_pairs.clone(),
                    command,
                    restart_policy,
                    behind_proxy: true,
                    upstream_file: format!("/etc/nginx/conf.d/upstreams/{app}.conf"),
                    upstream_name: format!("{app}_backend").replace('-', "_"),
                    front_door: services::FrontDoor::default(),
                }]
            })
            .unwrap_or_default()
    };
    let mut services = services;
    if let Some(file) = &raw.nginx_upstream_file {
        if services.len() > 1 {
            c.problem("nginx-upstream-file", "set upstream-file per service in the services file instead");
        } else if let Some(path) = c.parse("nginx-upstream-file", &Some(file.clone()), g::remote_path) {
            services.iter_mut().for_each(|s| s.upstream_file = path.clone());
        }
    }

    (services, migrate_command)
}

pub(super) fn hosts_and_ssh(c: &mut Check, raw: &RawInputs) -> (Vec<HostSpec>, SshSpec) {
    let hosts: Vec<HostSpec> = raw
        .hosts
        .as_deref()
        .map(|h| g::list(h).iter().filter_map(|s| c.parse("hosts", &Some(s.clone()), g::host_spec)).collect())
        .unwrap_or_default();
    let ssh = SshSpec {
        user: c.or("ssh-user", &raw.ssh_user, "root".into(), g::user),
        port: c.or("ssh-port", &raw.ssh_port, 22, g::port),
        private_key: c.secret(
            "ssh-private-key",
            &raw.ssh_private_key,
            "ssh-private-key-ssm",
            &raw.ssh_private_key_ssm,
        ),
        known_hosts: c.secret(
            "ssh-known-hosts",
            &raw.ssh_known_hosts,
            "ssh-known-hosts-ssm",
            &raw.ssh_known_hosts_ssm,
        ),
        timeout: c.or("ssh-timeout", &raw.ssh_timeout, Duration::from_secs(20), g::duration),
        docker_socket: c.or(
            "docker-socket",
            &raw.docker_socket,
            "/var/run/docker.sock".into(),
            g::remote_path,
        ),
        proxy_url: c.or(
            "proxy-url",
            &raw.proxy_url,
            url::Url::parse("http://127.0.0.1:80/").expect("url"),
            g::http_url,
        ),
        lock_dir: c.or("lock-dir", &raw.lock_dir, "/var/lib/deploy-action/locks".into(), g::remote_path),
        break_lock: c.or("break-lock", &raw.break_lock, false, g::boolean),
        jump: c.parse("ssh-jump-host", &raw.ssh_jump_host, g::host_spec),
    };
    (hosts, ssh)
}

/// The EC2 settings (for `target: ec2`), and whether ids or filters name
/// the instances.
pub(super) fn ec2(c: &mut Check, raw: &RawInputs, target: TargetKind) -> (Option<Ec2Spec>, bool) {
    let ec2_ids: Vec<String> = raw.ec2_instance_ids.as_deref().map(g::list).unwrap_or_default();
    let instance_id = regex::Regex::new(r"^i-[0-9a-f]{8,17}$").expect("regex");
    for id in &ec2_ids {
        if !instance_id.is_match(id) {
            c.problem("ec2-instance-ids", format!("'{id}' is not an instance id like i-0123456789abcdef0"));
        }
    }
    let mut ec2_filters = Vec::new();
    for f in raw.ec2_filters.as_deref().map(g::list).unwrap_or_default() {
        match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                ec2_filters.push((k.trim().to_string(), v.split('|').map(|x| x.trim().to_string()).collect()))
            }
            _ => c.problem(
                "ec2-filters",
                format!("'{f}' must be Tag=value (several values as a|b), like Role=web,Env=prod"),
            ),
        }
    }
    let ec2_address = c.choice(
        "ec2-address",
        &raw.ec2_address,
        AddressKind::PrivateIp,
        &[
            ("private-ip", AddressKind::PrivateIp),
            ("public-ip", AddressKind::PublicIp),
            ("public-dns", AddressKind::PublicDns),
        ],
    );
    let connect = ec2_connect(c, raw, target, ec2_address);
    let console_host_keys = c.choice(
        "ec2-host-keys",
        &raw.ec2_host_keys,
        false,
        &[("known-hosts", false), ("console-output", true)],
    );
    let ec2 = (target == TargetKind::Ec2).then(|| Ec2Spec {
        instance_ids: ec2_ids.clone(),
        filters: ec2_filters.clone(),
        address: ec2_address,
        connect,
        console_host_keys,
    });

    (ec2, !ec2_ids.is_empty() || !ec2_filters.is_empty())
}

/// `ec2-connect` and what it refuses: through an Instance Connect
/// Endpoint the run makes its own key (a stored one would never be used,
/// and a user who sets one believes it is), the endpoint is the way in (no
/// bastion), and it reaches instances at their private IP only.
fn ec2_connect(c: &mut Check, raw: &RawInputs, target: TargetKind, address: AddressKind) -> Ec2Connect {
    const EICE: &str = "ec2-connect 'instance-connect-endpoint'";
    let endpoint = c.choice(
        "ec2-connect",
        &raw.ec2_connect,
        false,
        &[("ssh", false), ("instance-connect-endpoint", true)],
    );
    let id = c.parse("ec2-instance-connect-endpoint-id", &raw.ec2_instance_connect_endpoint_id, |v| {
        let re = regex::Regex::new(r"^eice-[0-9a-f]{8,17}$").expect("regex");
        if re.is_match(v) {
            Ok(v.to_string())
        } else {
            Err(format!("'{v}' is not an Instance Connect Endpoint id like eice-0123456789abcdef0"))
        }
    });
    if !endpoint {
        if raw.ec2_instance_connect_endpoint_id.is_some() {
            c.problem("ec2-instance-connect-endpoint-id", format!("goes with {EICE}, which is not set"));
        }
        return Ec2Connect::Ssh;
    }
    if target != TargetKind::Ec2 {
        c.problem("ec2-connect", "is only used with target 'ec2'");
    }
    for (name, set) in
        [("ssh-private-key", &raw.ssh_private_key), ("ssh-private-key-ssm", &raw.ssh_private_key_ssm)]
    {
        if set.is_some() {
            c.problem(
                name,
                format!("is not used with {EICE}: each run makes its own key and pushes it with SendSSHPublicKey; remove it (and the stored key)"),
            );
        }
    }
    if raw.ssh_jump_host.is_some() {
        c.problem("ssh-jump-host", format!("is not used with {EICE}: the endpoint is the way in"));
    }
    if address != AddressKind::PrivateIp {
        c.problem(
            "ec2-address",
            format!("must be 'private-ip' with {EICE}: the endpoint reaches an instance at its private IP"),
        );
    }
    Ec2Connect::Endpoint { id }
}

#[cfg(test)]
mod tests {
    use crate::inputs::given::Given;
    use crate::inputs::{Ec2Connect, Problem, ROLLBACK_PENDING};

    #[test]
    fn one_service_from_the_inputs_and_what_ssh_defaults_to() {
        let i = Given::hosts().set("app", "shop-api").ok();
        let s = &i.services[0];
        assert_eq!((s.container_port, s.blue_port, s.green_port), (8080, 8081, 8082));
        assert_eq!(s.upstream_file, "/etc/nginx/conf.d/upstreams/shop-api.conf");
        assert_eq!(s.upstream_name, "shop_api_backend", "nginx names take no '-'");
        assert_eq!((i.ssh.user.as_str(), i.ssh.port), ("root", 22));
        assert_eq!(i.ssh.lock_dir, "/var/lib/deploy-action/locks");
        assert_eq!(i.ssh.proxy_url.as_str(), "http://127.0.0.1/");
        // `mode: rollback` without an image: filled in later from the last
        // good deployment.
        let i = Given::hosts().unset("image").set("github-deployments", "true").set("github-token", "t");
        let i = i.set("mode", "rollback").ok();
        assert_eq!(i.services[0].image.full(), ROLLBACK_PENDING);
    }

    #[test]
    fn ports_commands_and_an_upstream_file_are_refused_all_at_once() {
        let p =
            Given::hosts().set("blue-port", "9000").set("green-port", "9000").set("ssh-port", "0").problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0], "green-port: must differ from blue-port");
        assert!(p[1].starts_with("ssh-port: "), "{p:?}");
        let file = "services:\n  - {name: api, blue-port: 8111, green-port: 8112, version-path: /api/v}\n  \
                    - {name: rest, blue-port: 8121, green-port: 8122, version-path: /rest/v}\n";
        let p = Given::hosts()
            .set("services-file", "s.yml")
            .file("s.yml", file)
            .set("command", "[\"bin/web\"]")
            .set("blue-port", "9001")
            .set("nginx-upstream-file", "/etc/nginx/conf.d/x.conf")
            .problems();
        assert_eq!(
            p,
            [
                "blue-port: cannot be combined with 'services-file'; set it per service in the file",
                "command: cannot be combined with 'services-file'; set it per service in the file",
                "nginx-upstream-file: set upstream-file per service in the services file instead",
            ]
        );
    }

    #[test]
    fn ec2_needs_an_ssh_user_and_names_the_ami_users() {
        let p = Given::ec2().unset("ssh-user").with_defaults().problems();
        let msg = p.iter().find(|p| p.starts_with("ssh-user: is required for target 'ec2'")).expect("named");
        for user in ["ec2-user", "ubuntu", "admin"] {
            assert!(msg.contains(user), "{msg}");
        }
        assert_eq!(Given::ec2().with_defaults().problems(), Vec::<String>::new());
        // Plan reaches no host.
        let plan = Given::ec2().unset("ssh-user").with_defaults().set("mode", "plan");
        assert_eq!(plan.problems(), Vec::<String>::new());
    }

    fn hosts_file(file: &str) -> Given {
        Given::hosts().with_defaults().set("app", "shop").set("services-file", "s.yml").file("s.yml", file)
    }

    #[test]
    fn each_service_can_have_its_own_front_door() {
        let file = "services:\n\
            - {name: api, blue-port: 8111, green-port: 8112, front-door: {host: api.shop.example}}\n\
            - {name: rest, blue-port: 8121, green-port: 8122, front-door: {url: 'http://127.0.0.1:8080/', host: 'rest.shop.example:8080'}}\n\
            - {name: admin, blue-port: 8131, green-port: 8132, version-path: /admin/version}\n\
            - {name: worker, proxy: false}\n";
        let inputs = hosts_file(file).ok();
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
        let p = hosts_file(file).problems();
        for want in [
            "services[0] (api): front-door url http://127.0.0.1/api has a path",
            "services[1] (rest): front-door host 'not a host' must be the Host header nginx matches",
            "services[2] (web): front-door names neither url nor host",
            "services[3] (worker): has 'proxy: false' (not behind nginx) and a front-door",
        ] {
            assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
        }
        // A cluster's services file has no front doors.
        let p = Given::kubernetes()
            .unset("deployments")
            .set("services-file", "s.yml")
            .file("s.yml", "services:\n  - {name: api, front-door: {host: a.example}}\n")
            .problems();
        assert!(p.iter().any(|p| p.contains("front-door only apply to target 'hosts' and 'ec2'")), "{p:?}");
    }

    #[test]
    fn two_services_checked_with_the_same_request_are_refused() {
        let file = "services:\n\
            - {name: api, blue-port: 8111, green-port: 8112}\n\
            - {name: rest, blue-port: 8121, green-port: 8122}\n";
        let p = hosts_file(file).problems();
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
        assert_eq!(hosts_file(file).problems(), Vec::<String>::new());
    }

    /// `ec2-connect`: what reaching instances through an Instance Connect
    /// Endpoint asks of, and refuses in, the other inputs. No stored key
    /// to start from: an endpoint needs none.
    fn eice() -> Given {
        Given::ec2().unset("ssh-private-key").set("ec2-connect", "instance-connect-endpoint")
    }

    fn problems(g: Given) -> Vec<Problem> {
        g.load().err().unwrap_or_default()
    }

    fn named(p: &[Problem], input: &str) -> String {
        p.iter()
            .find(|p| p.input == input)
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("{input} not named: {p:?}"))
    }

    #[test]
    fn an_endpoint_needs_no_stored_key_and_takes_a_named_endpoint() {
        let inputs = eice().set("ec2-instance-connect-endpoint-id", "eice-0123456789abcdef0").ok();
        assert_eq!(
            inputs.ec2.unwrap().connect,
            Ec2Connect::Endpoint { id: Some("eice-0123456789abcdef0".into()) }
        );
        assert_eq!(eice().ok().ec2.unwrap().connect, Ec2Connect::Endpoint { id: None });
    }

    #[test]
    fn ssh_stays_the_default_and_still_needs_its_key() {
        let p = problems(Given::ec2().unset("ssh-private-key"));
        assert!(named(&p, "ssh-private-key").contains("is required"));
        assert_eq!(Given::ec2().ok().ec2.unwrap().connect, Ec2Connect::Ssh);
    }

    #[test]
    fn a_stored_key_a_bastion_or_a_public_address_is_refused_all_at_once() {
        let p = problems(
            eice()
                .set("ssh-private-key", "k")
                .set("ssh-jump-host", "bastion.example.com")
                .set("ec2-address", "public-ip")
                .set("ssh-known-hosts", ""),
        );
        assert!(named(&p, "ssh-private-key").contains("each run makes its own key"), "{p:?}");
        assert!(named(&p, "ssh-jump-host").contains("the endpoint is the way in"), "{p:?}");
        assert!(named(&p, "ec2-address").contains("must be 'private-ip'"), "{p:?}");
        let p = problems(eice().set("ssh-private-key-ssm", "/k"));
        assert!(named(&p, "ssh-private-key-ssm").contains("SendSSHPublicKey"), "{p:?}");
    }

    #[test]
    fn known_hosts_stay_required_through_an_endpoint() {
        let p = problems(eice().unset("ssh-known-hosts"));
        assert!(named(&p, "ssh-known-hosts").contains("host keys must be pinned"), "{p:?}");
    }

    #[test]
    fn a_bad_endpoint_id_an_id_without_the_endpoint_and_other_targets_are_named() {
        let p = problems(eice().set("ec2-instance-connect-endpoint-id", "vpce-123"));
        assert!(
            named(&p, "ec2-instance-connect-endpoint-id").contains("not an Instance Connect Endpoint id")
        );
        let p = problems(Given::ec2().set("ec2-instance-connect-endpoint-id", "eice-0123456789abcdef0"));
        assert!(named(&p, "ec2-instance-connect-endpoint-id").contains("goes with ec2-connect"));
        let p =
            problems(Given::hosts().set("hosts", "10.0.0.5").set("ec2-connect", "instance-connect-endpoint"));
        assert!(named(&p, "ec2-connect").contains("only used with target 'ec2'"));
        let p = problems(Given::ec2().set("ec2-connect", "ssm"));
        assert!(named(&p, "ec2-connect").contains("use one of: ssh, instance-connect-endpoint"));
    }

    #[test]
    fn console_host_keys_replace_the_stored_lines_but_not_a_bastions() {
        let console = Given::ec2().set("ec2-host-keys", "console-output").set("ssh-known-hosts", "");
        assert!(console.ok().ec2.unwrap().console_host_keys);
        // Without it, the stored lines are required as before.
        let p = problems(Given::ec2().set("ssh-known-hosts", ""));
        assert!(
            p.iter().any(|p| p.input == "ssh-known-hosts" && p.message.starts_with("is required")),
            "{p:?}"
        );
        // A bastion's key is not in any console output.
        let p = problems(console.set("ssh-jump-host", "bastion.example.com"));
        assert!(
            p.iter().any(|p| p.input == "ssh-known-hosts" && p.message.contains("'ssh-jump-host' key")),
            "{p:?}"
        );
        // Another target: refused, unless it is the default the runner passes.
        let hosts = |keys: &str| {
            let g = Given::hosts().set("hosts", "10.0.0.1").set("ec2-filters", "").set("ec2-host-keys", keys);
            problems(g).iter().map(|p| p.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(hosts("console-output"), ["input 'ec2-host-keys': is only used with target 'ec2'"]);
        assert_eq!(hosts("known-hosts"), Vec::<String>::new());
    }
}
