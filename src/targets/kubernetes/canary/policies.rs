//! Behind a weighted router the canary's pods carry
//! `deploy-action/canary-of` instead of the stable Service's selector
//! labels, so that the stable Service never sends them traffic. A
//! NetworkPolicy that selects the stable's pods by those labels then does
//! not select the canary's: under a default deny they would get no traffic
//! at all, and an egress rule would no longer confine them. Such a deploy
//! is refused before any change, naming the policies, unless a
//! NetworkPolicy of its own selects the canary's pods (as the docs advise).
//! A PodDisruptionBudget that misses them only leaves the canary's pods
//! uncounted: a warning.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::core::SelectorExt;

use super::*;
use crate::targets::kubernetes::paged::list_all;

type Labels = BTreeMap<String, String>;

/// Whether `sel` selects a pod labelled `labels`, by Kubernetes' rules
/// (kube's own [`kube::core::Selector`]: every `matchLabels` pair and every
/// expression hold; an empty selector selects every pod). One the API
/// server would not have accepted (an unknown operator, `In` without
/// values) selects none.
pub(super) fn selects(sel: &LabelSelector, labels: &Labels) -> bool {
    kube::core::Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// The names of the `selectors` that select the stable's pods but not the
/// canary's; none when one of them selects the canary's pods and not the
/// stable's (a policy written for the canary).
pub(super) fn missed<'a>(
    selectors: &'a [(String, LabelSelector)],
    stable: &Labels,
    canary: &Labels,
) -> Vec<&'a str> {
    let own = selectors.iter().any(|(_, s)| selects(s, canary) && !selects(s, stable));
    if own {
        return Vec::new();
    }
    selectors
        .iter()
        .filter(|(_, s)| selects(s, stable) && !selects(s, canary))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Every `K` in the canary's namespace as `(name, selector)`; `selector`
/// says which pods one selects (`None`: none).
async fn selectors<K>(
    c: &Canary<'_>,
    (resource, group, kind): (&str, &'static str, &str),
    selector: impl Fn(K) -> Option<(String, LabelSelector)>,
) -> Result<Vec<(String, LabelSelector)>, KubeError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(c.client.clone(), &c.ns);
    let all = list_all(&api, &ListParams::default())
        .await
        .map_err(|e| KubeError::from_api(e, "list", resource, group, ObjectRef::new(kind, &c.ns, "")))?;
    Ok(all.into_iter().filter_map(selector).collect())
}

/// Refuses a weighted canary whose pods a NetworkPolicy of the stable's
/// would miss (see the module's docs); warns of PodDisruptionBudgets that
/// would. Nothing is changed.
///
/// # Errors
/// [`KubeError::CanaryUncovered`], or the API's refusal to list.
pub(super) async fn check(c: &Canary<'_>) -> Result<(), KubeError> {
    if !c.router().weighted() {
        return Ok(());
    }
    let stable = stable_pod_labels(&c.stable.deployment);
    let canary = canary_pod_labels(&c.stable, &c.traffic);
    let name = |m: kube::api::ObjectMeta| m.name.unwrap_or_default();
    // A NetworkPolicy's podSelector is required; absent, it would be `{}`.
    let policies =
        selectors(c, ("networkpolicies", "networking.k8s.io", "networkpolicy"), |p: NetworkPolicy| {
            Some((name(p.metadata), p.spec.and_then(|s| s.pod_selector).unwrap_or_default()))
        })
        .await?;
    let missed_by: Vec<String> = missed(&policies, &stable, &canary)
        .into_iter()
        .map(|n| format!("networkpolicy {}/{n}", c.ns))
        .collect();
    if !missed_by.is_empty() {
        return Err(KubeError::CanaryUncovered {
            object: c.stable.object.clone(),
            policies: missed_by.join(", "),
        });
    }
    // A budget without a selector selects no pod (policy/v1).
    let budgets =
        selectors(c, ("poddisruptionbudgets", "policy", "poddisruptionbudget"), |b: PodDisruptionBudget| {
            Some((name(b.metadata), b.spec?.selector?))
        })
        .await?;
    for name in missed(&budgets, &stable, &canary) {
        c.runner.warning(
            "canary_budget_uncovered",
            &format!(
                "poddisruptionbudget {}/{name} selects {}'s pods, not its canary's (they carry {CANARY_OF}={} instead of the Service's selector labels): the canary's pods are not counted by it",
                c.ns, c.stable.object, c.stable.object.name
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn by_labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector { match_labels: Some(labels(pairs)), ..Default::default() }
    }

    fn by(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_match_as_kubernetes_matches_them() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selects(&LabelSelector::default(), &pod), "empty selects all");
        assert!(selects(&by_labels(&[("app", "web")]), &pod));
        assert!(!selects(&by_labels(&[("app", "web"), ("tier", "back")]), &pod));
        assert!(selects(&by("app", "In", &["api", "web"]), &pod));
        assert!(!selects(&by("app", "NotIn", &["web"]), &pod));
        assert!(selects(&by("team", "NotIn", &["x"]), &pod), "NotIn holds when the key is absent");
        assert!(selects(&by("tier", "Exists", &[]), &pod));
        assert!(!selects(&by("tier", "DoesNotExist", &[]), &pod));
        assert!(!selects(&by("app", "Unknown", &["web"]), &pod));
    }

    #[test]
    fn a_policy_of_the_stable_that_misses_the_canary_is_named_unless_the_canary_has_its_own() {
        let stable = labels(&[("app", "web"), ("tier", "front")]);
        let canary = labels(&[("tier", "front"), (CANARY_OF, "web")]);
        let allow_web = ("allow-web".to_string(), by_labels(&[("app", "web")]));
        let deny_all = ("deny-all".to_string(), LabelSelector::default());
        let front = ("front".to_string(), by_labels(&[("tier", "front")]));
        let set = [deny_all.clone(), allow_web.clone(), front.clone()];
        assert_eq!(missed(&set, &stable, &canary), ["allow-web"]);
        let own = ("allow-web-canary".to_string(), by_labels(&[(CANARY_OF, "web")]));
        assert!(missed(&[deny_all, allow_web, front, own], &stable, &canary).is_empty());
    }
}
