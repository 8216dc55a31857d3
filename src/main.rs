//! The container's entry point (PID 1): set up logging, turn SIGINT/SIGTERM
//! into a cancellation token, validate inputs before anything is contacted,
//! run the pipeline, map the outcome to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use deploy_action::inputs::{self, Env, SecretSource};
use deploy_action::pipeline;
use deploy_action::redact::Redactor;
use deploy_action::runner::Runner;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let env = Env::from_process();
    let runner =
        Runner::stdout(env.get_path("GITHUB_OUTPUT"), env.get_path("GITHUB_STEP_SUMMARY"), Redactor::new());
    tracing_subscriber::fmt()
        .with_writer(runner.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEPLOY_ACTION_LOG")
                .unwrap_or_else(|_| "deploy_action=info,octocrab=off,bollard=warn,warn".into()),
        )
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let checked = inputs::load(&env).and_then(|i| {
        let problems = deploy_action::targets::preflight(&i);
        if problems.is_empty() { Ok(i) } else { Err(problems) }
    });
    let inputs = match checked {
        Ok(i) => i,
        Err(problems) => {
            runner.line(&format!(
                "deploy-action: {} input problem(s); nothing was contacted or changed:",
                problems.len()
            ));
            for p in &problems {
                runner.error("invalid_input", &p.to_string());
            }
            runner.set_output("status", "error");
            return ExitCode::from(2);
        }
    };
    // Secrets given inline are masked before anything else is printed
    // (known_hosts holds public host keys: not a secret; a webhook URL is
    // its own credential: a secret).
    for s in
        [&inputs.ssh.private_key, &inputs.registry.password, &inputs.notify.slack, &inputs.notify.webhook]
            .into_iter()
            .flatten()
    {
        if let SecretSource::Inline(v) = s {
            runner.add_secret(v.expose());
        }
    }
    if let Some(k) = &inputs.kubernetes {
        for v in deploy_action::targets::kubernetes::cluster::credentials(k) {
            runner.add_secret(&v);
        }
    }
    if let Some(t) = &inputs.github.token {
        runner.add_secret(t.expose());
    }
    for d in &inputs.deprecated {
        runner.warning("deprecated_input", &d.to_string());
    }

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            runner.error("internal_error", &format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let outcome = rt.block_on(async {
        tokio::spawn(watch_signals(cancel.clone(), runner.clone()));
        pipeline::run(inputs, runner.clone(), cancel).await
    });
    rt.shutdown_timeout(Duration::from_millis(300));
    ExitCode::from(outcome.exit_code())
}

/// The runner sends SIGINT on cancel, SIGTERM 7.5 s later; in a container
/// we are PID 1, so no default handler would act on either.
async fn watch_signals(cancel: CancellationToken, runner: Runner) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        runner.warning(
            "signals_unavailable",
            "cannot install SIGINT/SIGTERM handlers; cancellation will not be graceful",
        );
        return;
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if !cancel.is_cancelled() {
            runner.warning(
                "cancelled",
                &format!(
                    "{name} received: starting nothing new, bringing the in-flight step to a safe state"
                ),
            );
            cancel.cancel();
        }
    }
}
