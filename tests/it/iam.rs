//! The IAM policies the docs give (`docs/iam/*.json`) are exactly enough:
//! in a moto server of this test's own with IAM enforcement on (moto checks
//! each request against the caller's policies; the stack's
//! `moto-server.py` makes it check SSM and EKS reads against their real
//! ARNs, as AWS does), a deploy signed with a user holding only that policy
//! succeeds, and with any one statement removed it fails before anything
//! changes, naming the permission. `kms:Decrypt` (used by SSM on the
//! caller's behalf for SecureStrings) is not checked by moto: that
//! statement stays in the files, untested here.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{ensure_serving, fleet_action, image, lock_hosts};
use crate::support::{live_version, repo_root, stack_var};

const REGION: &str = "eu-west-1";

/// A moto of this test only, killed on drop.
struct Moto {
    url: String,
    child: Child,
}

impl Moto {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With moto-server.py's own arguments (the EKS cluster it describes).
    fn start_with(extra: &[String]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let python = std::path::PathBuf::from(stack_var("VENV")).join("bin/python");
        let child = Command::new(python)
            .arg(repo_root().join("scripts/stack/moto-server.py"))
            .args(extra)
            .args(["--", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto-server.py");
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "moto did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { url, child }
    }

    /// From now on every request is checked against the caller's policies.
    async fn enforce(&self) {
        let r = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .body("0")
            .send()
            .await
            .expect("reset-auth");
        assert!(r.status().is_success(), "reset-auth: {}", r.status());
    }

    async fn config(&self, key: &str, secret: &str) -> aws_config::SdkConfig {
        let creds = aws_credential_types::Credentials::new(key, secret, None, None, "iam-test");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(creds)
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack's AWS CLI (awscli, in its venv) against this moto, as
/// `key`: the test's own set-up, not the product's.
fn aws(moto: &Moto, key: (&str, &str), args: &[&str]) -> Value {
    let cli = std::path::PathBuf::from(stack_var("VENV")).join("bin/aws");
    let out = Command::new(cli)
        .args(["--endpoint-url", &moto.url, "--region", REGION, "--output", "json"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("aws cli");
    assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A user holding `policy` inline; returns its (key, secret).
fn user(moto: &Moto, name: &str, policy: &Value) -> (String, String) {
    aws(moto, ("setup", "setup"), &["iam", "create-user", "--user-name", name]);
    set_policy(moto, ("setup", "setup"), name, policy);
    let key = aws(moto, ("setup", "setup"), &["iam", "create-access-key", "--user-name", name]);
    let k = &key["AccessKey"];
    (k["AccessKeyId"].as_str().unwrap().to_string(), k["SecretAccessKey"].as_str().unwrap().to_string())
}

fn set_policy(moto: &Moto, as_key: (&str, &str), name: &str, policy: &Value) {
    let doc = policy.to_string();
    aws(
        moto,
        as_key,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            name,
            "--policy-name",
            "deploy",
            "--policy-document",
            &doc,
        ],
    );
}

fn policy(file: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("docs/iam").join(file)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/iam/{file}: {e}"))
}

/// `policy` without the statement `sid`.
fn without(policy: &Value, sid: &str) -> Value {
    let mut p = policy.clone();
    let statements = p["Statement"].as_array_mut().unwrap();
    let before = statements.len();
    statements.retain(|s| s["Sid"] != sid);
    assert_eq!(statements.len(), before - 1, "no statement {sid}");
    p
}

/// The EC2 examples' scenario (instances by tag, the SSH key, known_hosts
/// and registry password from `/deploy/staging/`, the app's secrets under
/// `/shop/staging/`) with exactly `docs/iam/ec2-deploy.json`.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_ec2_policy_is_exactly_enough() {
    let _hosts = lock_hosts(&[8]);
    tokio::task::block_in_place(|| ensure_serving(8, "v1"));
    let moto = Moto::start();
    let setup = moto.config("setup", "setup").await;
    let doc = policy("ec2-deploy.json");
    let everything = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
    let admin = user(&moto, "admin", &everything);
    let deployer = user(&moto, "deployer", &doc);

    // What the account holds: the instance, the parameters (and one the
    // policy does not reach, which must stay unread).
    let addr = crate::support::host_addr(8);
    crate::support::tagged_instances(&setup, &[(&addr, &[("Role", "web"), ("Env", "staging")])]).await;
    let ssm = aws_sdk_ssm::Client::new(&setup);
    let read = |k: &str| std::fs::read_to_string(stack_var(k)).unwrap();
    crate::kubernetes::put_ssm(
        &ssm,
        "/deploy/staging/",
        &[
            ("ssh-key", &read("SSH_KEY")),
            ("known-hosts", &read("SSH_KNOWN_HOSTS")),
            ("ghcr-read-token", &stack_var("REGISTRY_PASSWORD")),
        ],
    )
    .await;
    crate::kubernetes::put_ssm(&ssm, "/shop/staging/", &[("DATABASE_URL", "postgres://shop@db/shop")]).await;
    moto.enforce().await;

    let deploy = |v: &str, key: &(String, String)| {
        let action = fleet_action(&[8], &image(v))
            .without("INPUT_HOSTS")
            .without("INPUT_SSH-PRIVATE-KEY")
            .without("INPUT_SSH-KNOWN-HOSTS")
            .without("INPUT_REGISTRY-PASSWORD")
            .input("target", "ec2")
            .input("ssh-user", "root")
            .input("ec2-filters", "Role=web,Env=staging")
            .input("aws-region", REGION)
            .input("ssh-private-key-ssm", "/deploy/staging/ssh-key")
            .input("ssh-known-hosts-ssm", "/deploy/staging/known-hosts")
            .input("registry-password-ssm", "/deploy/staging/ghcr-read-token")
            .input("ssm-paths", "/shop/staging/")
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", &key.0)
            .env("AWS_SECRET_ACCESS_KEY", &key.1);
        tokio::task::block_in_place(|| action.run())
    };

    let run = deploy("v2", &deployer);
    assert_eq!(run.code, Some(0), "the documented policy is enough:\n{}", run.stdout);
    assert_eq!(live_version(8), "v2");

    // Each statement is needed: without it the run stops before any host
    // changes, naming the permission.
    let admin = (admin.0.as_str(), admin.1.as_str());
    for (sid, permission) in [
        ("FindTheInstances", "ec2:DescribeInstances"),
        ("ReadTheDeployMaterial", "ssm:GetParameter"),
        ("ReadTheAppSecrets", "ssm:GetParametersByPath"),
    ] {
        set_policy(&moto, admin, "deployer", &without(&doc, sid));
        let run = deploy("v3", &deployer);
        assert_eq!(run.code, Some(1), "without {sid}:\n{}", run.stdout);
        assert!(run.stdout.contains(permission), "without {sid}, {permission} is named:\n{}", run.stdout);
        assert_eq!(live_version(8), "v2", "without {sid}, nothing changed");
    }
    // And the whole policy again is enough again (the failures left nothing).
    set_policy(&moto, admin, "deployer", &doc);
    let run = deploy("v1", &deployer);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(live_version(8), "v1");
}

/// The EKS scenario (`eks-cluster: shop-prod`, the app's secrets by
/// `ssm-paths: /shop/prod/`) with exactly `docs/iam/eks-deploy.json`: the
/// AWS part passes (the cluster is described, the secrets read), and the
/// run goes on to the cluster, which refuses this user's token (the stack's
/// EKS authenticator knows only the stack's own identity): a Kubernetes
/// refusal, not an AWS one. Without any one statement, the AWS refusal names
/// the permission.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_eks_policy_is_exactly_enough_to_reach_the_cluster() {
    let stack_dir = std::path::PathBuf::from(stack_var("STACK_DIR"));
    let moto = Moto::start_with(&[
        format!("--eks-endpoint={}", stack_var("K8S_SERVER")),
        format!("--eks-ca-file={}", stack_dir.join("k8s/pki/ca.crt").display()),
        "--eks-cluster=shop-prod".into(),
        format!("--eks-region={REGION}"),
    ]);
    let doc = policy("eks-deploy.json");
    let everything = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
    let admin = user(&moto, "admin", &everything);
    let deployer = user(&moto, "deployer", &doc);
    let setup = moto.config("setup", "setup").await;
    crate::kubernetes::put_ssm(
        &aws_sdk_ssm::Client::new(&setup),
        "/shop/prod/",
        &[("DATABASE_URL", "postgres://x@db/shop")],
    )
    .await;
    moto.enforce().await;

    let ns = crate::kubernetes::Ns::new("iam-eks");
    let deploy = |key: &(String, String)| {
        let action = ns
            .action("web")
            .without("INPUT_KUBECONFIG")
            .input("eks-cluster", "shop-prod")
            .input("aws-region", REGION)
            .input("ssm-paths", "/shop/prod/")
            .input("image", "example.invalid/web:v2")
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", &key.0)
            .env("AWS_SECRET_ACCESS_KEY", &key.1);
        tokio::task::block_in_place(|| action.run())
    };
    let run = deploy(&deployer);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("1 secret(s) for the app: DATABASE_URL"), "SSM read:\n{}", run.stdout);
    assert!(run.stdout.contains("kube_unauthorized"), "the cluster's refusal, past AWS:\n{}", run.stdout);
    assert!(!run.stdout.contains("not authorized to perform"), "{}", run.stdout);

    let admin = (admin.0.as_str(), admin.1.as_str());
    for (sid, permission) in
        [("FindTheCluster", "eks:DescribeCluster"), ("ReadTheAppSecrets", "ssm:GetParametersByPath")]
    {
        set_policy(&moto, admin, "deployer", &without(&doc, sid));
        let run = deploy(&deployer);
        assert_eq!(run.code, Some(1), "without {sid}:\n{}", run.stdout);
        assert!(run.stdout.contains(permission), "without {sid}, {permission} is named:\n{}", run.stdout);
        assert!(
            !run.stdout.contains("kube_unauthorized"),
            "without {sid}, stopped before the cluster:\n{}",
            run.stdout
        );
    }
}
