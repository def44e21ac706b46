//! The EndpointSlices of every namespace, for `externalTrafficPolicy: Local`: which
//! Services have a ready endpoint on this node (`endpoints[].nodeName`). Listed, then
//! watched like the Services (discovery's watch, back-off); the set is sent on change.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use k8s_openapi::{
    List, api::discovery::v1::EndpointSlice, apimachinery::pkg::apis::meta::v1::WatchEvent,
};
use tokio::{sync::watch, task::JoinHandle};

use super::kube::{call_any, targets};
use crate::control::discovery::{
    BACKOFF_MAX, BACKOFF_MIN, Candidates, POLL_INTERVAL,
    kubeconfig::load_kubeconfig,
    watch::{Watch, WatchEnd},
};

/// Every EndpointSlice (list and watch).
pub const SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// Most slices kept (a slice holds up to 100 endpoints by default).
pub const MAX_SLICES: usize = 50_000;
/// The label naming a slice's Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name` of the Services with a ready endpoint on `node` among `slices`.
pub fn local_services<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_LABEL))
        else {
            continue;
        };
        let here = s.endpoints.iter().flatten().any(|e| {
            e.node_name.as_deref() == Some(node)
                && e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
        });
        if here {
            out.insert(format!(
                "{}/{svc}",
                s.metadata.namespace.as_deref().unwrap_or("default")
            ));
        }
    }
    out
}

fn key_of(s: &EndpointSlice) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Starts the task.
pub fn spawn(
    kubeconfig: PathBuf,
    node: String,
    candidates: Candidates,
    tx: watch::Sender<BTreeSet<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let publish = |slices: &BTreeMap<String, EndpointSlice>| {
            let set = local_services(slices.values(), &node);
            tx.send_if_modified(|cur| {
                let changed = *cur != set;
                *cur = set;
                changed
            });
        };
        loop {
            let Ok(access) = load_kubeconfig(&kubeconfig) else {
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            };
            let to = targets(&access, &candidates()).await;
            let listed = match call_any(&access, &to, hyper::Method::GET, SLICES_PATH, None).await {
                Ok((addr, name, 200, body)) => serde_json::from_slice::<List<EndpointSlice>>(&body)
                    .map(|l| (addr, name, l))
                    .map_err(|e| format!("bad EndpointSlice list: {e}")),
                Ok((_, _, code, _)) => Err(format!("{SLICES_PATH}: HTTP {code}")),
                Err(e) => Err(e),
            };
            let end = match listed {
                Ok((addr, name, list)) => {
                    backoff = BACKOFF_MIN;
                    let version = list.metadata.resource_version.clone().unwrap_or_default();
                    let mut slices: BTreeMap<String, EndpointSlice> = list
                        .items
                        .into_iter()
                        .take(MAX_SLICES)
                        .map(|s| (key_of(&s), s))
                        .collect();
                    publish(&slices);
                    follow(&access, addr, &name, version, &mut slices, &publish).await
                }
                Err(e) => WatchEnd::Failed(e),
            };
            let wait = match end {
                WatchEnd::Closed | WatchEnd::Expired => BACKOFF_MIN,
                WatchEnd::Failed(why) => {
                    log::debug!("services: EndpointSlices: {why}");
                    let w = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

async fn follow(
    access: &crate::control::discovery::kubeconfig::ApiAccess,
    addr: std::net::SocketAddr,
    name: &str,
    version: String,
    slices: &mut BTreeMap<String, EndpointSlice>,
    publish: &impl Fn(&BTreeMap<String, EndpointSlice>),
) -> WatchEnd {
    let mut w: Watch<EndpointSlice> =
        match Watch::open_at(access, addr, name, SLICES_PATH, &version).await {
            Ok(w) => w,
            Err(end) => return end,
        };
    loop {
        match w.next().await {
            // A watch that ends lists again: versions are not kept here.
            Ok(WatchEvent::Added(s) | WatchEvent::Modified(s)) => {
                let k = key_of(&s);
                if slices.len() < MAX_SLICES || slices.contains_key(&k) {
                    slices.insert(k, s);
                }
            }
            Ok(WatchEvent::Deleted(s)) => {
                slices.remove(&key_of(&s));
            }
            Ok(_) => continue,
            Err(end) => return end,
        }
        publish(slices);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_on_this_node_make_a_service_local() {
        let list: List<EndpointSlice> = serde_json::from_str(
            r#"{"metadata":{"resourceVersion":"1"},"items":[
              {"metadata":{"name":"web-1","namespace":"x","labels":{"kubernetes.io/service-name":"web"}},
               "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"nodeName":"n1","conditions":{"ready":true}},
                                                  {"addresses":["10.0.0.2"],"nodeName":"n2"}]},
              {"metadata":{"name":"db-1","namespace":"x","labels":{"kubernetes.io/service-name":"db"}},
               "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.3"],"nodeName":"n1","conditions":{"ready":false}}]},
              {"metadata":{"name":"orphan","namespace":"x"},"addressType":"IPv4",
               "endpoints":[{"addresses":["10.0.0.4"],"nodeName":"n1"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            local_services(&list.items, "n1"),
            BTreeSet::from(["x/web".to_string()])
        );
        assert_eq!(
            local_services(&list.items, "n2"),
            BTreeSet::from(["x/web".to_string()])
        );
        assert!(local_services(&list.items, "n3").is_empty());
    }
}
