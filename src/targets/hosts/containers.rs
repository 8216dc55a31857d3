//! Containers and images on one host through bollard: the candidate's
//! create body (pure), pulls with progress, one-off runs, stop/remove, and
//! image pruning. Secret values only ever travel inside Docker API request
//! bodies; nothing here logs an environment.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HealthStatusEnum, HostConfig,
    PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, StopContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;

use super::docker::{is_not_found, message};
use super::error::{HostError, HostFailure};
use crate::inputs::{ImageRef, RestartPolicy, Service};
use crate::runner::Runner;
use crate::targets::Release;

pub const LABEL_APP: &str = "deploy-action.app";
pub const LABEL_IMAGE: &str = "deploy-action.image";
pub const LABEL_DEPLOY_ID: &str = "deploy-action.deploy-id";
pub const LABEL_RUN_URL: &str = "deploy-action.run-url";
pub const LABEL_COLOUR: &str = "deploy-action.colour";
pub const LABEL_SECRETS: &str = "deploy-action.secrets-fingerprint";
pub const LABEL_SERVICE: &str = "deploy-action.service";
pub const LABEL_ROLE: &str = "deploy-action.role";
/// [`Service::config_fingerprint`] of what the container was started with.
pub const LABEL_CONFIG: &str = "deploy-action.config";

/// How often a pull says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The colour's host port for `service`.
pub fn port(service: &Service, colour: &str) -> u16 {
    if colour == "green" { service.green_port } else { service.blue_port }
}

/// The 127.0.0.1 port the container publishes, if any.
pub fn published(c: &ContainerSummary) -> Option<u16> {
    c.ports.as_ref()?.iter().find_map(|p| p.public_port)
}

/// `(service, published port)` of each of `running` in `colour`.
pub fn colour_ports(running: &[&ContainerSummary], colour: &str) -> Vec<(String, u16)> {
    running
        .iter()
        .filter(|c| label(c, LABEL_COLOUR) == Some(colour))
        .filter_map(|c| Some((label(c, LABEL_SERVICE).unwrap_or("").to_string(), published(c)?)))
        .collect()
}

/// The environment: the service's own, then the release's secrets.
fn environment(release: &Release, service: &Service) -> Vec<String> {
    service
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(release.secret_env.iter().map(|(k, v)| format!("{k}={}", v.expose())))
        .collect()
}

fn labels(release: &Release, service: &Service, role: &str) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (LABEL_APP.to_string(), release.app.clone()),
        (LABEL_IMAGE.to_string(), service.image.full()),
        (LABEL_DEPLOY_ID.to_string(), release.deploy_id.clone()),
        (LABEL_RUN_URL.to_string(), release.run_url.clone()),
        (LABEL_SERVICE.to_string(), service.name.clone()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ]);
    if let Some(d) = &release.secrets_fingerprint {
        l.insert(LABEL_SECRETS.to_string(), d.clone());
    }
    if role == "app" {
        l.insert(LABEL_CONFIG.to_string(), service.config_fingerprint());
    }
    l
}

/// The create body of `service`'s candidate in `colour`: published on
/// 127.0.0.1 only (nginx is the way in), labelled so `inspect` can read the
/// host back.
pub fn candidate_body(release: &Release, service: &Service, colour: &str) -> ContainerCreateBody {
    let mut labels = labels(release, service, "app");
    labels.insert(LABEL_COLOUR.to_string(), colour.to_string());
    let host_port = port(service, colour);
    let (exposed, bindings) = if host_port == 0 {
        (None, None)
    } else {
        let key = format!("{}/tcp", service.container_port);
        let binding =
            PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(host_port.to_string()) };
        (Some(vec![key.clone()]), Some(HashMap::from([(key, Some(vec![binding]))])))
    };
    let restart = match service.restart_policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
    };
    ContainerCreateBody {
        image: Some(service.image.full()),
        env: Some(environment(release, service)),
        cmd: service.command.clone(),
        labels: Some(labels),
        exposed_ports: exposed,
        host_config: Some(HostConfig {
            port_bindings: bindings,
            restart_policy: Some(DockerRestart { name: Some(restart), maximum_retry_count: None }),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The app's containers, running or not.
pub async fn list(docker: &Docker, unit: &str, app: &str) -> Result<Vec<ContainerSummary>, HostError> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_APP}={app}")])]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| {
            HostError::new(
                unit,
                HostFailure::DockerFailed,
                format!("listing containers failed: {}", message(&e)),
            )
        })
}

/// The container's name as given (without Docker's leading `/`).
pub fn name_of(c: &ContainerSummary) -> &str {
    c.names.as_ref().and_then(|n| n.first()).map_or("", |n| n.trim_start_matches('/'))
}

pub fn label<'a>(c: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels.as_ref()?.get(key).map(String::as_str)
}

pub fn is_running(c: &ContainerSummary) -> bool {
    matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING))
}

/// Creates and starts a container named `name`, replacing a stale one.
///
/// # Errors
/// `container_start_failed` with the Engine's message.
pub async fn start(
    docker: &Docker,
    unit: &str,
    name: &str,
    body: ContainerCreateBody,
) -> Result<(), HostError> {
    remove(docker, unit, name, Duration::ZERO).await?;
    let fail = |what: &str, e: bollard::errors::Error| {
        HostError::new(
            unit,
            HostFailure::ContainerStartFailed,
            format!("{what} container {name} failed: {}", message(&e)),
        )
    };
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(name.to_string()), ..Default::default() }),
            body,
        )
        .await
        .map_err(|e| fail("creating", e))?;
    docker.start_container(name, None).await.map_err(|e| fail("starting", e))?;
    tracing::info!(host = unit, container = name, "container started");
    Ok(())
}

/// Stops (giving the app `grace` to finish requests) and removes `name`;
/// a missing container is fine.
///
/// # Errors
/// `container_remove_failed`.
pub async fn remove(docker: &Docker, unit: &str, name: &str, grace: Duration) -> Result<(), HostError> {
    let fail = |e: bollard::errors::Error| {
        HostError::new(
            unit,
            HostFailure::ContainerRemoveFailed,
            format!("removing container {name} failed: {}", message(&e)),
        )
    };
    if !grace.is_zero() {
        // The stop request itself waits up to `grace`.
        let d = docker.clone().with_timeout(grace + docker.timeout());
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match d.stop_container(name, Some(StopContainerOptions { t: Some(t), signal: None })).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    match docker
        .remove_container(name, Some(RemoveContainerOptions { force: true, v: false, link: false }))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // Already being removed (e.g. a concurrent rollback).
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

/// Container `name` as the Engine describes it; `None` when there is none.
async fn inspect(
    docker: &Docker,
    unit: &str,
    name: &str,
) -> Result<Option<bollard::models::ContainerInspectResponse>, HostError> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(HostError::new(
            unit,
            HostFailure::DockerFailed,
            format!("inspecting {name} failed: {}", message(&e)),
        )),
    }
}

/// Whether `name` runs (and is healthy, if it has a health check).
pub async fn running(docker: &Docker, unit: &str, name: &str) -> Result<bool, HostError> {
    let Some(c) = inspect(docker, unit, name).await? else { return Ok(false) };
    let state = c.state.unwrap_or_default();
    let unhealthy = matches!(
        state.health.and_then(|h| h.status),
        Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY)
    );
    Ok(state.running == Some(true) && !unhealthy)
}

/// The deploy id of container `name` if it is running (`None` when it does
/// not exist or has stopped).
///
/// # Errors
/// `docker_failed`.
pub async fn running_deploy(docker: &Docker, unit: &str, name: &str) -> Result<Option<String>, HostError> {
    let Some(c) = inspect(docker, unit, name).await? else { return Ok(None) };
    if c.state.as_ref().and_then(|s| s.running) != Some(true) {
        return Ok(None);
    }
    Ok(Some(
        c.config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_DEPLOY_ID).cloned())
            .unwrap_or_else(|| "(unknown)".into()),
    ))
}

/// Registry credentials for `image`, if configured.
pub fn credentials(
    registry: Option<&(String, crate::secrets::SecretValue)>,
    image: &ImageRef,
) -> Option<DockerCredentials> {
    registry.map(|(user, password)| DockerCredentials {
        username: Some(user.clone()),
        password: Some(password.expose().to_string()),
        serveraddress: image.registry.clone(),
        ..Default::default()
    })
}

/// Pulls `image`, logging progress every few seconds, within `bound`.
///
/// # Errors
/// `registry_auth_failed` when the registry refuses the credentials,
/// `image_pull_failed` otherwise, `image_pull_timeout` past `bound`.
pub async fn pull(
    docker: &Docker,
    runner: &Runner,
    unit: &str,
    image: &ImageRef,
    creds: Option<DockerCredentials>,
    bound: Duration,
) -> Result<(), HostError> {
    let full = image.full();
    let options = CreateImageOptions {
        from_image: Some(image.name()),
        tag: Some(image.tag_or_latest()),
        ..Default::default()
    };
    let had_creds = creds.is_some();
    let fail = |msg: String| {
        let lower = msg.to_ascii_lowercase();
        if [
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "denied",
            "incorrect username or password",
        ]
        .iter()
        .any(|p| lower.contains(p))
        {
            let hint = if had_creds {
                "check registry-username and registry-password"
            } else {
                "set registry-username and registry-password"
            };
            HostError::new(
                unit,
                HostFailure::RegistryAuthFailed,
                format!(
                    "the registry {} refused to let us pull {full} ({hint}): {msg}",
                    image.registry.as_deref().unwrap_or("docker.io")
                ),
            )
        } else {
            HostError::new(unit, HostFailure::ImagePullFailed, format!("pulling {full} failed: {msg}"))
        }
    };
    let work = async {
        let mut stream = docker.create_image(Some(options), None, creds);
        let started = Instant::now();
        let mut said = started;
        let mut layers: HashMap<String, String> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| fail(message(&e)))?;
            if let Some(detail) = info.error_detail {
                return Err(fail(detail.message.unwrap_or_else(|| "unknown error".into())));
            }
            if let (Some(id), Some(status)) = (info.id, info.status) {
                layers.insert(id, status);
            }
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                let done = layers.values().filter(|s| s.contains("complete") || s.contains("exists")).count();
                runner.line(&format!(
                    "{unit}: pulling {full}: {done}/{} layers done ({}s)",
                    layers.len(),
                    started.elapsed().as_secs()
                ));
            }
        }
        Ok(())
    };
    tokio::time::timeout(bound, work).await.map_err(|_| {
        HostError::new(
            unit,
            HostFailure::ImagePullTimeout,
            format!("pulling {full} did not finish within {}s", bound.as_secs()),
        )
    })??;
    tracing::info!(host = unit, stage = "prepare", image = %full, "image pulled");
    Ok(())
}

/// What a one-off container did.
pub struct OneOff {
    pub exit_code: i64,
    /// The last lines of its output.
    pub tail: String,
}

/// Runs `cmd` in a new container of `service`'s image with the release's
/// environment, waits up to `bound`, returns its exit code and last log
/// lines, and removes it.
///
/// # Errors
/// `container_start_failed`, `migration_timeout`, `docker_failed`.
pub async fn run_once(
    docker: &Docker,
    unit: &str,
    name: &str,
    release: &Release,
    service: &Service,
    cmd: &[String],
    bound: Duration,
) -> Result<OneOff, HostError> {
    let body = ContainerCreateBody {
        image: Some(service.image.full()),
        env: Some(environment(release, service)),
        cmd: Some(cmd.to_vec()),
        labels: Some(labels(release, service, "migrate")),
        host_config: Some(HostConfig { init: Some(true), ..Default::default() }),
        ..Default::default()
    };
    start(docker, unit, name, body).await?;
    let waited = async {
        let mut s =
            docker.wait_container(name, Some(WaitContainerOptions { condition: "not-running".into() }));
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(HostError::new(
                unit,
                HostFailure::DockerFailed,
                format!("waiting for {name} failed: {}", message(&e)),
            )),
            None => {
                Err(HostError::new(unit, HostFailure::DockerFailed, format!("waiting for {name}: no answer")))
            }
        }
    };
    let exit = tokio::time::timeout(bound, waited).await;
    let tail = tail_logs(docker, name, 20).await;
    // Removed either way: on a timeout it is stopped first (SIGTERM, then
    // SIGKILL after a short grace), so nothing is left running for the next
    // deploy to find.
    let removed = remove(docker, unit, name, Duration::from_secs(2)).await;
    match exit {
        Ok(code) => Ok(OneOff { exit_code: code?, tail }),
        Err(_) => Err(HostError::new(
            unit,
            HostFailure::MigrationTimeout,
            format!(
                "{name} did not finish within {}s (migrate-timeout) and was {}; its last lines:\n{}",
                bound.as_secs(),
                if removed.is_ok() { "stopped and removed" } else { "stopped, but could not be removed" },
                tail.trim_end()
            ),
        )),
    }
}

/// The last `n` lines of a container's output; empty if unavailable.
pub async fn tail_logs(docker: &Docker, name: &str, n: usize) -> String {
    let options = LogsOptions { stdout: true, stderr: true, tail: n.to_string(), ..Default::default() };
    let mut s = docker.logs(name, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        match chunk {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => out.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdIn { .. } => {}
        }
    }
    out
}

/// Removes images of `repo` (`registry/name`, no tag) other than `keep`
/// (references) that no container uses. Best effort: failures are logged.
pub async fn prune(docker: &Docker, unit: &str, repo: &str, keep: &[String]) {
    let mut keep_ids = HashSet::new();
    for r in keep {
        if let Ok(i) = docker.inspect_image(r).await
            && let Some(id) = i.id
        {
            keep_ids.insert(id);
        }
    }
    let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
    let images = match docker
        .list_images(Some(ListImagesOptions { filters: Some(filters), ..Default::default() }))
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(host = unit, stage = "retire", error = %message(&e), "could not list images to prune");
            return;
        }
    };
    for img in images.iter().filter(|i| !keep_ids.contains(&i.id)) {
        // Remove by tag so that other repositories' tags of the same image
        // survive; untagged leftovers by id.
        let refs: Vec<&str> = if img.repo_tags.is_empty() {
            vec![img.id.as_str()]
        } else {
            img.repo_tags.iter().map(String::as_str).filter(|t| t.starts_with(&format!("{repo}:"))).collect()
        };
        for r in refs {
            match docker.remove_image(r, None::<RemoveImageOptions>, None).await {
                Ok(_) => tracing::info!(host = unit, stage = "retire", image = r, "old image pruned"),
                Err(e) => {
                    tracing::debug!(host = unit, stage = "retire", image = r, error = %message(&e), "image kept")
                }
            }
        }
    }
}
