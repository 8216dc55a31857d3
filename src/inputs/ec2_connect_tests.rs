//! `ec2-connect`: what reaching instances through an Instance Connect
//! Endpoint asks of, and refuses in, the other inputs.

use super::{Ec2Connect, Env, Problem, load};

fn env(extra: &[(&str, &str)]) -> Env {
    let mut pairs: Vec<(String, String)> = [
        ("INPUT_TARGET", "ec2"),
        ("INPUT_ENVIRONMENT", "production"),
        ("INPUT_IMAGE", "ghcr.io/acme/shop:2"),
        ("INPUT_EC2-FILTERS", "Role=web"),
        ("INPUT_AWS-REGION", "us-east-1"),
        ("INPUT_SSH-KNOWN-HOSTS", "known"),
        ("INPUT_SSH-USER", "ec2-user"),
        ("INPUT_GITHUB-DEPLOYMENTS", "false"),
        ("GITHUB_REPOSITORY", "acme/shop"),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        pairs.retain(|(key, _)| key != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    Env::from_pairs(pairs)
}

fn problems(extra: &[(&str, &str)]) -> Vec<Problem> {
    load(&env(extra)).err().unwrap_or_default()
}

fn named(p: &[Problem], input: &str) -> String {
    p.iter()
        .find(|p| p.input == input)
        .map(|p| p.message.clone())
        .unwrap_or_else(|| panic!("{input} not named: {p:?}"))
}

#[test]
fn an_endpoint_needs_no_stored_key_and_takes_a_named_endpoint() {
    let inputs = load(&env(&[
        ("INPUT_EC2-CONNECT", "instance-connect-endpoint"),
        ("INPUT_EC2-INSTANCE-CONNECT-ENDPOINT-ID", "eice-0123456789abcdef0"),
    ]))
    .unwrap();
    assert_eq!(
        inputs.ec2.unwrap().connect,
        Ec2Connect::Endpoint { id: Some("eice-0123456789abcdef0".into()) }
    );
    let inputs = load(&env(&[("INPUT_EC2-CONNECT", "instance-connect-endpoint")])).unwrap();
    assert_eq!(inputs.ec2.unwrap().connect, Ec2Connect::Endpoint { id: None });
}

#[test]
fn ssh_stays_the_default_and_still_needs_its_key() {
    let p = problems(&[]);
    assert!(named(&p, "ssh-private-key").contains("is required"));
    let inputs = load(&env(&[("INPUT_SSH-PRIVATE-KEY", "k")])).unwrap();
    assert_eq!(inputs.ec2.unwrap().connect, Ec2Connect::Ssh);
}

#[test]
fn a_stored_key_a_bastion_or_a_public_address_is_refused_all_at_once() {
    let p = problems(&[
        ("INPUT_EC2-CONNECT", "instance-connect-endpoint"),
        ("INPUT_SSH-PRIVATE-KEY", "k"),
        ("INPUT_SSH-JUMP-HOST", "bastion.example.com"),
        ("INPUT_EC2-ADDRESS", "public-ip"),
        ("INPUT_SSH-KNOWN-HOSTS", ""),
    ]);
    assert!(named(&p, "ssh-private-key").contains("each run makes its own key"), "{p:?}");
    assert!(named(&p, "ssh-jump-host").contains("the endpoint is the way in"), "{p:?}");
    assert!(named(&p, "ec2-address").contains("must be 'private-ip'"), "{p:?}");
    let p =
        problems(&[("INPUT_EC2-CONNECT", "instance-connect-endpoint"), ("INPUT_SSH-PRIVATE-KEY-SSM", "/k")]);
    assert!(named(&p, "ssh-private-key-ssm").contains("SendSSHPublicKey"), "{p:?}");
}

#[test]
fn known_hosts_stay_required_through_an_endpoint() {
    let mut e: Vec<(String, String)> = Vec::new();
    for (k, v) in env(&[("INPUT_EC2-CONNECT", "instance-connect-endpoint")]).iter() {
        if k != "INPUT_SSH-KNOWN-HOSTS" {
            e.push((k.into(), v.into()));
        }
    }
    let p = load(&Env::from_pairs(e)).unwrap_err();
    assert!(named(&p, "ssh-known-hosts").contains("host keys must be pinned"), "{p:?}");
}

#[test]
fn a_bad_endpoint_id_an_id_without_the_endpoint_and_other_targets_are_named() {
    let p = problems(&[
        ("INPUT_EC2-CONNECT", "instance-connect-endpoint"),
        ("INPUT_EC2-INSTANCE-CONNECT-ENDPOINT-ID", "vpce-123"),
    ]);
    assert!(named(&p, "ec2-instance-connect-endpoint-id").contains("not an Instance Connect Endpoint id"));
    let p = problems(&[
        ("INPUT_SSH-PRIVATE-KEY", "k"),
        ("INPUT_EC2-INSTANCE-CONNECT-ENDPOINT-ID", "eice-0123456789abcdef0"),
    ]);
    assert!(named(&p, "ec2-instance-connect-endpoint-id").contains("goes with ec2-connect"));
    let p = problems(&[
        ("INPUT_TARGET", "hosts"),
        ("INPUT_HOSTS", "10.0.0.5"),
        ("INPUT_EC2-CONNECT", "instance-connect-endpoint"),
    ]);
    assert!(named(&p, "ec2-connect").contains("only used with target 'ec2'"));
    let p = problems(&[("INPUT_EC2-CONNECT", "ssm")]);
    assert!(named(&p, "ec2-connect").contains("use one of: ssh, instance-connect-endpoint"));
}

#[test]
fn console_host_keys_replace_the_stored_lines_but_not_a_bastions() {
    let console = [
        ("INPUT_EC2-HOST-KEYS", "console-output"),
        ("INPUT_SSH-KNOWN-HOSTS", ""),
        ("INPUT_SSH-PRIVATE-KEY", "key"),
    ];
    let inputs = load(&env(&console)).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(inputs.ec2.unwrap().console_host_keys);
    // Without it, the stored lines are required as before.
    let p = problems(&[("INPUT_SSH-KNOWN-HOSTS", ""), ("INPUT_SSH-PRIVATE-KEY", "key")]);
    assert!(p.iter().any(|p| p.input == "ssh-known-hosts" && p.message.starts_with("is required")), "{p:?}");
    // A bastion's key is not in any console output.
    let mut with_bastion = console.to_vec();
    with_bastion.push(("INPUT_SSH-JUMP-HOST", "bastion.example.com"));
    let p = problems(&with_bastion);
    assert!(
        p.iter().any(|p| p.input == "ssh-known-hosts" && p.message.contains("'ssh-jump-host' key")),
        "{p:?}"
    );
    // Another target: refused, unless it is the default the runner passes.
    let hosts = |keys: &'static str| {
        problems(&[
            ("INPUT_TARGET", "hosts"),
            ("INPUT_EC2-FILTERS", ""),
            ("INPUT_SSH-USER", ""),
            ("INPUT_HOSTS", "10.0.0.1"),
            ("INPUT_SSH-PRIVATE-KEY", "key"),
            ("INPUT_EC2-HOST-KEYS", keys),
        ])
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
    };
    assert_eq!(hosts("console-output"), ["input 'ec2-host-keys': is only used with target 'ec2'"]);
    assert_eq!(hosts("known-hosts"), Vec::<String>::new());
}
