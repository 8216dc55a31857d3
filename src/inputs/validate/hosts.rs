//! The hosts' side: the services file (or the one service of the inputs),
//! the hosts and SSH, EC2 discovery and how to connect to what it finds.

use super::*;

/// The services (one from the inputs, or a services file) and the
/// migration command.
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
