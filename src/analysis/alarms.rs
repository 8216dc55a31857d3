//! CloudWatch alarms (`rollback-alarms`), read as AWS CodeDeploy reads
//! them: one `DescribeAlarms` for every named alarm (metric and composite),
//! and any of them in `ALARM` is a breach. `OK` and `INSUFFICIENT_DATA`
//! pass. A named alarm that does not exist is a settings error: fatal
//! before the deploy, a failed reading during it (someone deleted it).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::{AnalysisError, Figure, ReadError, Source, Verdict, When};

/// What a reading may spend: two attempts within [`super::READ_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// The alarms of `rollback-alarms` in one region.
pub struct Alarms {
    client: aws_sdk_cloudwatch::Client,
    names: Vec<String>,
    region: String,
}

impl Alarms {
    /// A client with the run's credential chain and endpoint settings
    /// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_CLOUDWATCH`), as for SSM.
    pub async fn new(region: &str, names: Vec<String>) -> Self {
        Self::from_sdk_config(&crate::secrets::client::sdk_config(region, IMDS_TIMEOUT).await, names)
    }

    /// A client from a loaded configuration (tests point it at moto).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, names: Vec<String>) -> Self {
        let config = aws_sdk_cloudwatch::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(super::READ_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            client: aws_sdk_cloudwatch::Client::from_conf(config),
            names,
            region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// Every named alarm's state and reason, by name.
    async fn states(&self) -> Result<BTreeMap<String, (StateValue, String)>, ReadError> {
        let pages = self
            .client
            .describe_alarms()
            .set_alarm_names(Some(self.names.clone()))
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .max_records(100)
            .into_paginator()
            .send();
        let pages: Vec<_> = pages.try_collect().await.map_err(|e| ReadError::Failed(self.failure(e)))?;
        let mut states = BTreeMap::new();
        for page in pages {
            let metric =
                page.metric_alarms().iter().map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
            let composite =
                page.composite_alarms().iter().map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
            for (name, state, reason) in metric.chain(composite) {
                if let (Some(name), Some(state)) = (name, state) {
                    states.insert(name.to_string(), (state.clone(), reason.unwrap_or_default().to_string()));
                }
            }
        }
        Ok(states)
    }

    fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    ) -> String {
        let hint = match e.code() {
            Some("AccessDenied" | "AccessDeniedException") => {
                " (the job's AWS role needs cloudwatch:DescribeAlarms)"
            }
            _ => "",
        };
        match (e.code(), e.message()) {
            (Some(code), Some(message)) => {
                format!("CloudWatch DescribeAlarms in {}: {code}: {message}{hint}", self.region)
            }
            _ => format!("CloudWatch DescribeAlarms in {}: {}{hint}", self.region, DisplayErrorContext(&e)),
        }
    }
}

/// The figures of one reading: a row per named alarm found.
pub fn figures(names: &[String], states: &BTreeMap<String, (StateValue, String)>) -> Vec<Figure> {
    names
        .iter()
        .filter_map(|name| {
            let (state, reason) = states.get(name)?;
            Some(Figure {
                source: format!("CloudWatch alarm '{name}'"),
                value: state.as_str().to_string(),
                threshold: "ALARM rolls back".into(),
                verdict: match state {
                    StateValue::Alarm => Verdict::Breach(AnalysisError::AlarmBreached {
                        alarm: name.clone(),
                        reason: reason.chars().take(300).collect(),
                        when: When::Window,
                    }),
                    _ => Verdict::Ok,
                },
            })
        })
        .collect()
}

#[async_trait]
impl Source for Alarms {
    fn name(&self) -> String {
        format!("CloudWatch alarms {}", super::quoted(&self.names))
    }

    fn unavailable_code(&self) -> &'static str {
        "alarms_unavailable"
    }

    async fn read(&self) -> Result<Vec<Figure>, ReadError> {
        let states = self.states().await?;
        let missing: Vec<String> = self.names.iter().filter(|n| !states.contains_key(*n)).cloned().collect();
        if !missing.is_empty() {
            return Err(ReadError::Refused(AnalysisError::AlarmNotFound {
                names: missing,
                region: self.region.clone(),
            }));
        }
        Ok(figures(&self.names, &states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_is_a_breach_and_the_rest_pass() {
        let names: Vec<String> = ["api-5xx", "db-cpu", "quiet"].map(String::from).to_vec();
        let states = BTreeMap::from([
            (
                "api-5xx".to_string(),
                (StateValue::Alarm, "Threshold Crossed: 1 datapoint [5.0] > 1.0".to_string()),
            ),
            ("db-cpu".to_string(), (StateValue::Ok, String::new())),
            ("quiet".to_string(), (StateValue::InsufficientData, String::new())),
        ]);
        let f = figures(&names, &states);
        assert_eq!(
            f.iter().map(|f| f.value.as_str()).collect::<Vec<_>>(),
            ["ALARM", "OK", "INSUFFICIENT_DATA"]
        );
        let Verdict::Breach(e) = &f[0].verdict else { panic!("{f:?}") };
        assert_eq!(
            e.to_string(),
            "CloudWatch alarm 'api-5xx' is ALARM during the observe window (threshold: any alarm in ALARM): Threshold Crossed: 1 datapoint [5.0] > 1.0"
        );
        assert_eq!(e.reason(), "alarm_breached");
        assert!(matches!(f[1].verdict, Verdict::Ok) && matches!(f[2].verdict, Verdict::Ok));
    }
}
