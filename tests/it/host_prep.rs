//! The host preparation of the docs is a fixture: `docs/hosts/user-data.sh`
//! is what the stack runs on its hosts (whole on the docs host, `DOCS_HOST`
//! of `.stack/env`, host 5; its `nginx` step on every other one, from
//! `scripts/stack/host-services`), the nginx configuration `docs/hosts.md`
//! shows is the one the script writes, and a newcomer's settings (`app: app`,
//! `ssh-user: ec2-user`, as the script set them up) deploy to the host it
//! prepared.
//!
//! Isolation: the tests that change the docs host take its lock
//! ([`lock_hosts`], as `fleet.rs`) and leave it serving the shared `app`
//! from one colour; the others only read.

use crate::fleet::{ensure_serving, image, lock_held, lock_hosts};
use crate::support::action::Action;
use crate::support::{
    host_addr, host_exec, live_version, repo_root, running_colours, shared_app_inputs, stack_var,
};

const SCRIPT: &str = "docs/hosts/user-data.sh";

fn script() -> String {
    std::fs::read_to_string(repo_root().join(SCRIPT)).unwrap()
}

/// The stack's docs host (`DOCS_HOST` of `.stack/env`).
fn docs_host() -> usize {
    stack_var("DOCS_HOST").parse().expect("DOCS_HOST in .stack/env: run scripts/stack/up --hosts 8")
}

/// The here-document of the script that writes `file` (as the script names
/// it, e.g. `"/etc/nginx/conf.d/$APP.conf"`), expanded as `sh` would with
/// these values for its variables.
fn written(file: &str, app: &str) -> String {
    let script = script();
    let start = script
        .lines()
        .position(|l| l.trim_start().starts_with(&format!("put {file} ")) && l.contains("<<"))
        .unwrap_or_else(|| panic!("{SCRIPT} writes no {file} from a here-document"));
    let quoted = script.lines().nth(start).unwrap().contains("<<'EOF'");
    let body: Vec<&str> = script.lines().skip(start + 1).take_while(|l| *l != "EOF").collect();
    let text = body.join("\n") + "\n";
    if quoted {
        return text;
    }
    text.replace("${APP}", app)
        .replace("$APP", app)
        .replace("$HTTP_PORT", "80")
        .replace("$BLUE_PORT", "8081")
        .replace("\\$", "$")
}

/// The fenced block of `docs/hosts.md` whose first line is `first`.
fn docs_block(first: &str) -> String {
    let page = std::fs::read_to_string(repo_root().join("docs/hosts.md")).unwrap();
    let at = page.find(first).unwrap_or_else(|| panic!("docs/hosts.md has no block starting {first:?}"));
    let end = at + page[at..].find("```").unwrap();
    // The page indents its blocks (they are in a list item).
    page[at..end].lines().map(|l| l.strip_prefix("  ").unwrap_or(l).trim_end().to_string() + "\n").collect()
}

/// The lines that configure nginx: no comments, no blank lines, and no
/// trailing comments.
fn directives(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap().trim_end().to_string())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

/// What `docs/hosts.md` shows is what the script writes (for `app: shop`).
#[test]
fn the_nginx_configuration_in_the_docs_is_the_scripts() {
    for (first, file) in [
        ("# /etc/nginx/conf.d/shop.conf\n", "\"/etc/nginx/conf.d/$APP.conf\""),
        (
            "# /etc/nginx/conf.d/00-deploy-action-log-format.conf",
            "/etc/nginx/conf.d/00-deploy-action-log-format.conf",
        ),
        ("# /etc/nginx/conf.d/upstreams/shop.conf", "\"/etc/nginx/conf.d/upstreams/$APP.conf\""),
    ] {
        assert_eq!(
            directives(&docs_block(first)),
            directives(&written(file, "shop")),
            "docs/hosts.md: {first}"
        );
    }
    // What scripts/stack/reset-host puts back is the script's first upstream.
    let reset =
        std::fs::read_to_string(repo_root().join("scripts/stack/templates/upstream-app.conf")).unwrap();
    assert_eq!(directives(&reset), directives(&written("\"/etc/nginx/conf.d/upstreams/$APP.conf\"", "app")));
    // The variables the page shows are the script's.
    let vars = docs_block("# The workflow's `app` input");
    assert!(script().contains(&vars), "docs/hosts.md shows other variables than {SCRIPT}'s top:\n{vars}");
}

/// The file `path` as `nginx -T` of host `k` shows it (what nginx serves).
fn served(dump: &str, path: &str) -> Option<String> {
    let marker = format!("# configuration file {path}:\n");
    let at = dump.find(&marker)? + marker.len();
    let rest = &dump[at..];
    let end = rest.find("\n# configuration file ").map_or(rest.len(), |e| e + 1);
    // (nginx -T ends each file with a blank line.)
    Some(rest[..end].trim_end().to_string() + "\n")
}

/// Every stack host serves the app's server and the log format the script
/// writes, and no other server on port 80.
#[test]
fn every_stack_host_serves_the_nginx_configuration_of_the_docs() {
    let hosts: usize = stack_var("HOST_COUNT").parse().unwrap();
    let want_server = written("\"/etc/nginx/conf.d/$APP.conf\"", "app");
    let want_format = written("/etc/nginx/conf.d/00-deploy-action-log-format.conf", "app");
    for k in 1..=hosts {
        let dump = host_exec(k, &["nginx", "-T"]);
        assert_eq!(
            served(&dump, "/etc/nginx/conf.d/app.conf").as_deref(),
            Some(want_server.as_str()),
            "host {k}"
        );
        assert_eq!(
            served(&dump, "/etc/nginx/conf.d/00-deploy-action-log-format.conf").as_deref(),
            Some(want_format.as_str()),
            "host {k}"
        );
        // What answers on port 80 is that server (the docs' `listen 80`).
        let listen = host_exec(k, &["ss", "-Hltn", "sport = :80"]);
        assert!(listen.contains("0.0.0.0:80 "), "host {k}: nginx listens on {listen}");
    }
}

/// The settings the docs give a newcomer for a host the script prepared:
/// `app` the script's `APP`, `ssh-user` its deploy user, the host by its
/// address alone.
fn newcomer(k: usize, v: &str) -> Action {
    Action::new().inputs(shared_app_inputs(&[host_addr(k)], &image(v))).input("ssh-user", "ec2-user")
}

/// `sshd -T` of the docs host for `user`: its forwarding settings.
fn forwarding(k: usize, user: &str) -> String {
    let spec = format!("user={user},host=runner,addr=127.0.0.1");
    let out = host_exec(k, &["/usr/sbin/sshd", "-T", "-f", "/etc/ssh/sshd_config", "-C", &spec]);
    out.lines()
        .filter(|l| l.starts_with("allowtcpforwarding") || l.starts_with("allowstreamlocal"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deploys to the host the script prepared with the settings the docs give,
/// and the new version serves through the nginx server the script wrote.
/// The host's sshd refuses forwarding to all but root, and its sudoers and
/// ec2-user's key file are private to it: only the script's drop-in, sudoers
/// file and key let ec2-user deploy.
#[test]
fn a_newcomer_deploys_to_the_host_the_script_prepared() {
    let k = docs_host();
    let _hosts = lock_hosts(&[k]);
    assert_eq!(
        forwarding(k, "ec2-user"),
        "allowtcpforwarding yes, allowstreamlocalforwarding yes",
        "the script's drop-in allows ec2-user"
    );
    assert_eq!(
        forwarding(k, "nopass-user"),
        "allowtcpforwarding no, allowstreamlocalforwarding no",
        "the host's own sshd_config refuses others"
    );
    assert_eq!(
        host_exec(k, &["ls", "/etc/sudoers.d"]).trim(),
        "deploy-action",
        "only the script's sudoers file"
    );

    ensure_serving(k, "v1");
    let run = newcomer(k, "v2").run();
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("sudo -n"), "ec2-user went through sudo: {}", run.stdout);
    assert_eq!(live_version(k), "v2");
    let colours = running_colours(k, "app");
    assert_eq!(colours.len(), 1, "{colours:?}");
    let head = std::process::Command::new("curl")
        .args(["-sI", "--max-time", "5", &format!("http://{}/version", host_addr(k))])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(head.contains("x-upstream-addr: 127.0.0.1:808"), "the docs' server adds the header: {head}");
    assert!(!lock_held(k));
}

/// Each file the script manages on the docs host, with its content and
/// modification time.
fn managed_files(k: usize) -> String {
    let files = "/etc/nginx/conf.d/00-deploy-action-log-format.conf /etc/nginx/conf.d/app.conf \
                 /etc/ssh/sshd_config /etc/ssh/sshd_config.d/10-deploy-action.conf \
                 /etc/sudoers.d/deploy-action /home/ec2-user/.ssh/authorized_keys";
    host_exec(
        k,
        &["sh", "-c", &format!("for f in {files}; do stat -c '%n %y %s' $f && md5sum < $f; done 2>&1")],
    )
}

/// Run again as the stack ran it (every step, same values), the script
/// writes nothing, reloads nothing and succeeds.
#[test]
fn the_script_run_again_changes_nothing() {
    let k = docs_host();
    let _hosts = lock_hosts(&[k]);
    let before = managed_files(k);
    assert!(!before.contains("No such file"), "{before}");
    let nginx_pid = host_exec(k, &["cat", "/run/nginx.pid"]);
    let key = std::fs::read_to_string(stack_var("SSH_KEY") + ".pub").unwrap();
    let script = repo_root().join(SCRIPT);
    let out = std::process::Command::new(repo_root().join("scripts/stack/host-exec"))
        .arg(k.to_string())
        .args(["env", "APP=app", "DEPLOY_USER=ec2-user", &format!("DEPLOY_PUBLIC_KEY={}", key.trim())])
        .args(["sh", &script.display().to_string()])
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("done: packages user sshd nginx"), "{log}");
    for changed in ["wrote ", "added ", "created ", "reloaded", "started", "removed "] {
        assert!(!log.contains(changed), "a second run changed something ({changed:?}):\n{log}");
    }
    assert_eq!(managed_files(k), before, "the files are untouched");
    assert_eq!(host_exec(k, &["cat", "/run/nginx.pid"]), nginx_pid, "the same nginx");
}
