//! The validation's unit tests build what the runner gives the container
//! with this: `Given::hosts().set("strategy", "canary").problems()`. A
//! `Given` starts from a run's `GITHUB_*` context and the inputs every
//! run has (an image, an environment, a region, no GitHub record), adds
//! the inputs (ids as in `action.yml`) and workspace files a test names,
//! and loads them as the binary does ([`super::load`]).

use super::{Env, Inputs, Problem, load, raw};

#[derive(Clone, Default)]
pub struct Given {
    inputs: Vec<(String, String)>,
    files: Vec<(String, String)>,
    /// Other variables of the job (`AWS_REGION`, a `GITHUB_*` the test
    /// replaces); `""` removes one.
    vars: Vec<(String, String)>,
    defaults: bool,
}

impl Given {
    /// No target chosen: only the context and the inputs every run has.
    pub fn bare() -> Self {
        Given::default()
            .set("github-deployments", "false")
            .set("image", "ghcr.io/acme/shop:1")
            .set("aws-region", "eu-west-1")
            .set("environment", "staging")
    }

    /// `target: hosts` with one host, reached with a key and pinned host
    /// keys.
    pub fn hosts() -> Self {
        Self::bare()
            .set("target", "hosts")
            .set("hosts", "web-1.internal")
            .set("ssh-private-key", "key")
            .set("ssh-known-hosts", "10.0.0.1 ssh-ed25519 AAAA")
    }

    /// `target: ec2` finding instances by a tag, as `ec2-user`.
    pub fn ec2() -> Self {
        Self::bare()
            .set("target", "ec2")
            .set("ec2-filters", "Role=web")
            .set("ssh-user", "ec2-user")
            .set("ssh-private-key", "key")
            .set("ssh-known-hosts", "10.0.0.1 ssh-ed25519 AAAA")
    }

    /// `target: kubernetes` rolling the Deployment `web`.
    pub fn kubernetes() -> Self {
        Self::bare().set("target", "kubernetes").set("deployments", "web")
    }

    /// Sets (or replaces) an input; `""` is how a workflow leaves one
    /// empty.
    pub fn set(mut self, input: &str, value: &str) -> Self {
        self.inputs.retain(|(k, _)| k != input);
        self.inputs.push((input.to_string(), value.to_string()));
        self
    }

    /// Leaves an input out, as a workflow that does not name it.
    pub fn unset(mut self, input: &str) -> Self {
        self.inputs.retain(|(k, _)| k != input);
        self
    }

    /// A variable of the job's environment besides the inputs; `""`
    /// is how the runner leaves one unset (even one of the `GITHUB_*`
    /// context).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// A file of the workspace, for `services-file`, `manifests`....
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_string(), text.to_string()));
        self
    }

    /// Also every other input's declared default, as the runner passes
    /// them whatever the workflow names.
    pub fn with_defaults(mut self) -> Self {
        self.defaults = true;
        self
    }

    pub fn load(&self) -> Result<Inputs, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in &self.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut env: Vec<(String, String)> = vec![];
        let mut put = |key: String, v: &str| {
            env.retain(|(e, _)| *e != key);
            env.push((key, v.to_string()));
        };
        if self.defaults {
            for name in raw::declared_fields() {
                if let Some(d) = raw::declared_default(name).filter(|d| !d.contains("${{")) {
                    put(format!("INPUT_{}", name.to_uppercase()), d);
                }
            }
        }
        put("GITHUB_REPOSITORY".into(), "acme/shop");
        put("GITHUB_SHA".into(), "0123456789abcdef0123456789abcdef01234567");
        put("GITHUB_WORKSPACE".into(), dir.path().to_str().unwrap());
        for (k, v) in &self.vars {
            put(k.clone(), v);
        }
        for (k, v) in &self.inputs {
            put(format!("INPUT_{}", k.to_uppercase()), v);
        }
        load(&Env::from_pairs(env))
    }

    /// The inputs, or a panic naming every problem.
    pub fn ok(&self) -> Inputs {
        self.load().unwrap_or_else(|p| {
            panic!("{:?}", p.iter().map(|p| format!("{}: {}", p.input, p.message)).collect::<Vec<_>>())
        })
    }

    /// Every problem as `input: message`; none when the inputs load.
    pub fn problems(&self) -> Vec<String> {
        match self.load() {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| format!("{}: {}", p.input, p.message)).collect(),
        }
    }
}

#[test]
fn a_given_run_is_what_the_runner_would_pass() {
    assert_eq!(Given::hosts().problems(), Vec::<String>::new());
    assert_eq!(Given::ec2().with_defaults().problems(), Vec::<String>::new());
    assert_eq!(Given::kubernetes().with_defaults().problems(), Vec::<String>::new());
    let i = Given::hosts().set("hosts", "a.internal, b.internal").ok();
    assert_eq!(i.hosts.len(), 2);
    // Left out, the image is required (it is no default).
    let p = Given::hosts().unset("image").problems();
    assert!(p.iter().any(|p| p.starts_with("image: ")), "{p:?}");
}
