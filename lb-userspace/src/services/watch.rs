//! The Services task: lists, then watches every Service (discovery's watch: bookmarks, 410
//! lists again, back-off), plans the addresses ([`super::ipam`]) and writes each Service's
//! `status.loadBalancer.ingress` with its `resourceVersion` as precondition (409: read
//! again, plan again). What it sends the daemon to announce is what the statuses say
//! and the plan agrees with: the status is the truth, so every node announces the same.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    List,
    api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus},
    apimachinery::pkg::apis::meta::v1::WatchEvent,
};
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

use super::ipam::{self, Family, Outcome, Request};
use super::kube::{SERVICES_PATH, call_any, targets};
use crate::config::services::{CLASS, ServicesSettings};
use crate::control::discovery::{
    BACKOFF_MAX, BACKOFF_MIN, Candidates, POLL_INTERVAL,
    kubeconfig::{ApiAccess, load_kubeconfig},
    watch::{Watch, WatchEnd},
};

/// Requested addresses, comma-separated (kube-vip's spelling is read too).
pub const ANNOTATION_IPS: &str = "xvip.io/loadbalancer-ips";
/// kube-vip's annotation for the same.
pub const ANNOTATION_IPS_KUBE_VIP: &str = "kube-vip.io/loadbalancerIPs";
/// Services with the same value and disjoint ports may share an address (MetalLB's
/// `metallb.universe.tf/allow-shared-ip`).
pub const ANNOTATION_SHARED: &str = "xvip.io/allow-shared-ip";
/// Most Services served; more are ignored (counted, logged once per change).
pub const MAX_SERVICES: usize = 1000;
/// Most Services kept from a list or watch (every type: the ones not served cost only
/// their key).
pub const MAX_OBJECTS: usize = 20_000;
/// Status writes retried after a conflict before the next event.
const MAX_RETRIES: usize = 3;
/// How often the task looks whether this node's VRRP ownership moved (the `Local` refusal
/// is the owner's to send, at once, not at the next Service change).
const OWNER_POLL: Duration = Duration::from_millis(200);

/// One Service address as `xvip status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceAddr {
    /// `namespace/name`.
    pub service: String,
    pub address: Option<String>,
    /// Whether this node answers for it now.
    pub announced: bool,
    /// Why not, or why no address.
    pub why: Option<String>,
}

/// A pool's use (`xvip_service_pool_addresses{pool,state}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PoolStatus {
    pub pool: String,
    /// Saturating at u64::MAX (a large IPv6 pool).
    pub total: u64,
    pub used: u64,
}

/// `--services` in the status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServicesStatus {
    pub kubeconfig: String,
    pub addresses: Vec<ServiceAddr>,
    pub pools: Vec<PoolStatus>,
    pub last_error: Option<String>,
    pub status_writes: u64,
    pub status_conflicts: u64,
    pub events_sent: u64,
    /// Services beyond [`MAX_SERVICES`] left without an address.
    pub ignored: u64,
}

/// What the task has seen, for the status endpoint.
#[derive(Debug, Default)]
pub struct Report {
    pub status: ServicesStatus,
    pub last_success: Option<Instant>,
}

/// Shared between the task and the status endpoint.
pub type SharedReport = Arc<Mutex<Report>>;

/// The Service addresses to announce, sent to the daemon on every change.
pub type Announce = watch::Sender<BTreeSet<IpAddr>>;

fn key_of(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether xvip serves `s`: `type: LoadBalancer` of class `xvip.io/lb`, or of no class with
/// `default_class`.
pub fn served(s: &Service, default_class: bool) -> bool {
    let Some(spec) = &s.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(c) => c == CLASS,
            None => default_class,
        }
}

/// The addresses `s`'s status names (hostnames and unparsable ones are not ours).
pub fn status_addrs(s: &Service) -> Vec<IpAddr> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .take(2)
        .collect()
}

/// What `s` asks of the IPAM. Requested addresses that do not parse are kept as a refusal
/// reason (`Err`).
pub fn request_of(s: &Service) -> Result<Request, String> {
    let spec = s.spec.clone().unwrap_or_default();
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    let mut requested = Vec::new();
    let text = ann
        .get(ANNOTATION_IPS)
        .or_else(|| ann.get(ANNOTATION_IPS_KUBE_VIP))
        .cloned()
        .or(spec.load_balancer_ip.clone())
        .unwrap_or_default();
    for a in text
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .take(3)
    {
        requested.push(
            a.parse::<IpAddr>()
                .map_err(|_| format!("requested address {a:?} is not an address"))?,
        );
    }
    let mut families: Vec<Family> = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .take(2)
        .collect();
    if families.is_empty() {
        families.push(Family::V4);
    }
    let policy = spec.ip_family_policy.unwrap_or_default();
    if policy == "SingleStack" || policy.is_empty() {
        families.truncate(1);
    }
    Ok(Request {
        key: key_of(s),
        namespace: s.metadata.namespace.clone().unwrap_or("default".into()),
        created: s
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        families,
        all_families: policy != "PreferDualStack",
        requested,
        sharing: ann
            .get(ANNOTATION_SHARED)
            .map(|v| v.chars().take(253).collect()),
        ports: spec
            .ports
            .unwrap_or_default()
            .iter()
            .take(256)
            .filter_map(|p| {
                Some((
                    p.protocol.clone().unwrap_or("TCP".into()),
                    u16::try_from(p.port).ok()?,
                ))
            })
            .collect(),
        current: status_addrs(s),
    })
}

/// The pure step: the plan for the Services `all` (served ones, at most [`MAX_SERVICES`],
/// oldest first), the writes it needs, and the addresses to announce now.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Served `externalTrafficPolicy: Local` Services with an address but no ready endpoint
    /// on this node: not announced here.
    pub no_local: BTreeSet<String>,
    /// key -> outcome.
    pub plan: BTreeMap<String, Outcome>,
    /// Services whose status must change: key -> the addresses to write.
    pub writes: BTreeMap<String, Vec<IpAddr>>,
    /// Addresses both the status and the plan give.
    pub announce: BTreeSet<IpAddr>,
    pub ignored: u64,
}

/// Whether `s` asks for `externalTrafficPolicy: Local`.
pub fn local_policy(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|x| x.external_traffic_policy.as_deref())
        == Some("Local")
}

/// See [`Step`]. `local`: the Services with a ready endpoint on this node.
pub fn step(
    settings: &ServicesSettings,
    all: &BTreeMap<String, Service>,
    local: &BTreeSet<String>,
) -> Step {
    let mut reqs = Vec::new();
    let mut bad = BTreeMap::new();
    let mut writes = BTreeMap::new();
    // A Service that stopped being served (another type; no class without
    // `--services-default-class`) and whose status still names a pool address gets its
    // status cleared: the address is free again and must not be named twice.
    for s in all.values().filter(|s| !served(s, settings.default_class)) {
        let class = s
            .spec
            .as_ref()
            .and_then(|x| x.load_balancer_class.as_deref());
        let ours = class.is_none() || class == Some(CLASS);
        if ours
            && status_addrs(s).iter().any(|a| {
                settings
                    .pools
                    .iter()
                    .any(|p| p.ranges.iter().any(|r| r.contains(*a)))
            })
        {
            writes.insert(key_of(s), Vec::new());
        }
    }
    for s in all.values().filter(|s| served(s, settings.default_class)) {
        match request_of(s) {
            Ok(r) => reqs.push(r),
            Err(why) => {
                bad.insert(key_of(s), (why, status_addrs(s)));
            }
        }
    }
    reqs.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    let ignored = reqs.len().saturating_sub(MAX_SERVICES) as u64;
    reqs.truncate(MAX_SERVICES);
    let mut plan = ipam::plan(&settings.pools, &reqs);
    let mut announce = BTreeSet::new();
    let mut no_local = BTreeSet::new();
    for (key, (why, current)) in bad {
        if !current.is_empty() {
            writes.insert(key.clone(), Vec::new());
        }
        plan.insert(key, Outcome::Refused(why));
    }
    for r in &reqs {
        let want = match &plan[&r.key] {
            Outcome::Assigned(a) => a.clone(),
            Outcome::Refused(_) => Vec::new(),
        };
        let same = {
            let (mut a, mut b) = (want.clone(), r.current.clone());
            a.sort();
            b.sort();
            a == b
        };
        let here = !all.get(&r.key).is_some_and(local_policy) || local.contains(&r.key);
        if same && !here && !want.is_empty() {
            no_local.insert(r.key.clone());
        } else if same {
            announce.extend(want);
        } else {
            writes.insert(r.key.clone(), want);
        }
    }
    Step {
        no_local,
        plan,
        writes,
        announce,
        ignored,
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `s` with its ingress replaced by `addrs`.
fn with_status(s: &Service, addrs: &[IpAddr]) -> Service {
    let mut s = s.clone();
    let st = s.status.get_or_insert_with(ServiceStatus::default);
    st.load_balancer = Some(LoadBalancerStatus {
        ingress: Some(
            addrs
                .iter()
                .map(|a| LoadBalancerIngress {
                    ip: Some(a.to_string()),
                    ip_mode: Some("VIP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
    });
    s
}

fn service_path(key: &str) -> String {
    let (ns, name) = key.split_once('/').unwrap_or(("default", key));
    format!("/api/v1/namespaces/{ns}/services/{name}")
}

/// The task's state between lists.
struct Task {
    settings: ServicesSettings,
    report: SharedReport,
    announce: Announce,
    services: BTreeMap<String, Service>,
    /// The last event reason sent per Service (one event per change, not per pass).
    evented: BTreeMap<String, String>,
    last_problem: Option<String>,
    candidates: Candidates,
    /// Where to ask, refreshed at every list.
    targets: Vec<(std::net::SocketAddr, String)>,
    /// Services with a ready endpoint on this node (the EndpointSlice task's last word).
    local: BTreeSet<String>,
    local_rx: watch::Receiver<BTreeSet<String>>,
    /// Whether this node holds the VIP (VRRP master): it sends the `Local` refusals.
    owner: Owner,
    /// What `owner` said at the last plan.
    was_owner: Option<bool>,
}

/// Whether this node is the VRRP owner now (`None` without VRRP).
pub type Owner = Arc<dyn Fn() -> Option<bool> + Send + Sync>;

/// Starts the task; `candidates` are asked before the kubeconfig's server (see
/// [`super::kube::targets`]).
pub fn spawn(
    settings: ServicesSettings,
    report: SharedReport,
    announce: Announce,
    candidates: Candidates,
    owner: Owner,
) -> JoinHandle<()> {
    let (local_tx, local_rx) = watch::channel(BTreeSet::new());
    let slices = super::endpoints::spawn(
        settings.kubeconfig.clone(),
        settings.node_name.clone(),
        candidates.clone(),
        local_tx,
    );
    tokio::spawn(async move {
        // The EndpointSlice task lives as long as this one.
        let _slices = AbortOnDrop(slices);
        let kubeconfig = settings.kubeconfig.clone();
        if let Ok(mut r) = report.lock() {
            r.status.kubeconfig = kubeconfig.display().to_string();
        }
        let mut t = Task {
            settings,
            report,
            announce,
            services: BTreeMap::new(),
            evented: BTreeMap::new(),
            last_problem: None,
            candidates,
            targets: Vec::new(),
            local: BTreeSet::new(),
            local_rx,
            owner,
            was_owner: None,
        };
        let mut backoff = BACKOFF_MIN;
        loop {
            let access = match load_kubeconfig(&kubeconfig) {
                Ok(a) => a,
                Err(e) => {
                    t.failed(&e.to_string());
                    tokio::time::sleep(POLL_INTERVAL).await;
                    continue;
                }
            };
            let ended = match t.list(&access).await {
                Ok((version, addr, name)) => {
                    backoff = BACKOFF_MIN;
                    t.follow(&access, version, addr, name).await
                }
                Err(e) => WatchEnd::Failed(e),
            };
            let wait = match ended {
                WatchEnd::Closed | WatchEnd::Expired => BACKOFF_MIN,
                WatchEnd::Failed(why) => {
                    t.failed(&why);
                    let w = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

impl Task {
    fn note(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    /// The API does not answer: what is announced stays (the statuses did not change).
    fn failed(&mut self, why: &str) {
        self.note(|r| r.status.last_error = Some(why.to_string()));
        let line = format!("services: {why}; the announced Service addresses stay");
        if self.last_problem.as_deref() != Some(line.as_str()) {
            log::warn!("{line}");
            self.last_problem = Some(line);
        }
    }

    /// Lists every Service: the version to watch from and who answered (watched there).
    async fn list(
        &mut self,
        access: &ApiAccess,
    ) -> Result<(String, std::net::SocketAddr, String), String> {
        self.targets = targets(access, &(self.candidates)()).await;
        let (addr, name, code, body) = call_any(
            access,
            &self.targets,
            hyper::Method::GET,
            SERVICES_PATH,
            None,
        )
        .await?;
        if code != 200 {
            return Err(format!("{SERVICES_PATH}: HTTP {code}"));
        }
        let list: List<Service> =
            serde_json::from_slice(&body).map_err(|e| format!("bad Service list: {e}"))?;
        self.services = list
            .items
            .into_iter()
            .take(MAX_OBJECTS)
            .map(|s| (key_of(&s), s))
            .collect();
        // The server that answered is asked first from now on.
        if let Some(i) = self.targets.iter().position(|(a, _)| *a == addr) {
            let t = self.targets.remove(i);
            self.targets.insert(0, t);
        }
        self.reconcile(access).await;
        Ok((
            list.metadata.resource_version.unwrap_or_default(),
            addr,
            name,
        ))
    }

    async fn follow(
        &mut self,
        access: &ApiAccess,
        mut version: String,
        addr: std::net::SocketAddr,
        name: String,
    ) -> WatchEnd {
        let mut w: Watch<Service> =
            match Watch::open_at(access, addr, &name, SERVICES_PATH, &version).await {
                Ok(w) => w,
                Err(end) => return end,
            };
        let mut owner_poll = tokio::time::interval(OWNER_POLL);
        owner_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = w.next() => ev,
                _ = owner_poll.tick() => {
                    if (self.owner)() != self.was_owner {
                        self.reconcile(access).await;
                    }
                    continue;
                }
                changed = self.local_rx.changed() => {
                    if changed.is_ok() {
                        self.local = self.local_rx.borrow_and_update().clone();
                        self.reconcile(access).await;
                    }
                    continue;
                }
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(end) => return end,
            };
            match ev {
                WatchEvent::Added(s) | WatchEvent::Modified(s) => {
                    version = s.metadata.resource_version.clone().unwrap_or(version);
                    let k = key_of(&s);
                    if self.services.len() < MAX_OBJECTS || self.services.contains_key(&k) {
                        self.services.insert(k, s);
                    }
                }
                WatchEvent::Deleted(s) => {
                    version = s.metadata.resource_version.clone().unwrap_or(version);
                    let k = key_of(&s);
                    self.services.remove(&k);
                    self.evented.remove(&k);
                }
                WatchEvent::Bookmark {
                    resource_version, ..
                } => {
                    version = resource_version;
                    continue;
                }
                WatchEvent::ErrorStatus(_) | WatchEvent::ErrorOther(_) => continue,
            }
            self.reconcile(access).await;
        }
    }

    /// Plans, writes the statuses that differ (a 409 reads the Service again and plans
    /// again, at most [`MAX_RETRIES`] times), sends events for refusals, and publishes.
    async fn reconcile(&mut self, access: &ApiAccess) {
        self.was_owner = (self.owner)();
        let mut st = step(&self.settings, &self.services, &self.local);
        for _ in 0..MAX_RETRIES {
            if st.writes.is_empty() {
                break;
            }
            let mut reread = false;
            for (key, addrs) in st.writes.clone() {
                let Some(s) = self.services.get(&key) else {
                    continue;
                };
                let body = match serde_json::to_vec(&with_status(s, &addrs)) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                let path = format!("{}/status", service_path(&key));
                let put = call_any(access, &self.targets, hyper::Method::PUT, &path, Some(body));
                match put.await.map(|(_, _, code, b)| (code, b)) {
                    Ok((200 | 201, b)) => {
                        if let Ok(new) = serde_json::from_slice::<Service>(&b) {
                            self.services.insert(key.clone(), new);
                        }
                        log::info!("services: {key}: status {addrs:?}");
                        self.note(|r| r.status.status_writes += 1);
                    }
                    Ok((409, _)) => {
                        self.note(|r| r.status.status_conflicts += 1);
                        reread = true;
                        let one = service_path(&key);
                        let get = call_any(access, &self.targets, hyper::Method::GET, &one, None);
                        if let Ok((_, _, 200, b)) = get.await
                            && let Ok(new) = serde_json::from_slice::<Service>(&b)
                        {
                            self.services.insert(key.clone(), new);
                        }
                    }
                    Ok((404, _)) => {
                        self.services.remove(&key);
                        reread = true;
                    }
                    Ok((code, _)) => self.failed(&format!("{path}: HTTP {code}")),
                    Err(e) => self.failed(&e),
                }
            }
            st = step(&self.settings, &self.services, &self.local);
            if !reread {
                break;
            }
        }
        for (key, o) in &st.plan {
            if let Outcome::Refused(why) = o
                && self.evented.get(key) != Some(why)
            {
                self.event(access, key, why).await;
                self.evented.insert(key.clone(), why.clone());
            }
        }
        // With VRRP the owner refuses a `Local` Service it has no endpoint for (routed
        // mode: the nodes that have one announce it, the others stay silent).
        if self.was_owner == Some(true) {
            for key in &st.no_local {
                let why = format!(
                    "externalTrafficPolicy Local: the VIP owner (node {}) has no ready endpoint of this Service; its address is not announced",
                    self.settings.node_name
                );
                if self.evented.get(key) != Some(&why) {
                    self.event(access, key, &why).await;
                    self.evented.insert(key.clone(), why);
                }
            }
        }
        self.evented.retain(|k, _| st.plan.contains_key(k));
        let usage = ipam::usage(&self.settings.pools, &st.plan);
        let addresses = st
            .plan
            .iter()
            .flat_map(|(k, o)| match o {
                Outcome::Assigned(a) => a
                    .iter()
                    .map(|a| ServiceAddr {
                        service: k.clone(),
                        address: Some(a.to_string()),
                        announced: false,
                        why: (!st.announce.contains(a)).then(|| {
                            if st.no_local.contains(k) {
                                format!(
                                    "externalTrafficPolicy Local: no ready endpoint on node {}",
                                    self.settings.node_name
                                )
                            } else {
                                "status not written yet".into()
                            }
                        }),
                    })
                    .collect::<Vec<_>>(),
                Outcome::Refused(why) => vec![ServiceAddr {
                    service: k.clone(),
                    address: None,
                    announced: false,
                    why: Some(why.clone()),
                }],
            })
            .collect();
        self.note(|r| {
            r.last_success = Some(Instant::now());
            r.status.last_error = None;
            r.status.ignored = st.ignored;
            r.status.addresses = addresses;
            r.status.pools = usage
                .iter()
                .map(|u| PoolStatus {
                    pool: u.name.clone(),
                    total: u64::try_from(u.total).unwrap_or(u64::MAX),
                    used: u.used,
                })
                .collect();
        });
        if self.last_problem.take().is_some() {
            log::info!("services: the API answers again");
        }
        self.announce.send_if_modified(|cur| {
            let changed = *cur != st.announce;
            if changed {
                log::info!("services: announcing {:?}", st.announce);
                *cur = st.announce.clone();
            }
            changed
        });
    }

    /// A Warning event on the Service (best effort: a failure is only counted in the
    /// log line of the next API problem).
    async fn event(&mut self, access: &ApiAccess, key: &str, why: &str) {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let uid = self
            .services
            .get(key)
            .and_then(|s| s.metadata.uid.clone())
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let ev = serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.xvip.{now:x}"), "namespace": ns},
            "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": ns,
                               "name": name, "uid": uid},
            "reason": "AllocationFailed", "message": why, "type": "Warning",
            "source": {"component": "xvip"}, "count": 1,
        });
        log::warn!("services: {key}: {why}");
        let path = format!("/api/v1/namespaces/{ns}/events");
        let post = call_any(
            access,
            &self.targets,
            hyper::Method::POST,
            &path,
            serde_json::to_vec(&ev).ok(),
        );
        if let Ok((_, _, 200 | 201, _)) = post.await {
            self.note(|r| r.status.events_sent += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::services::{AddrRange, PoolSpec};

    fn settings() -> ServicesSettings {
        ServicesSettings {
            default_class: false,
            kubeconfig: "/k".into(),
            node_name: "n1".into(),
            pools: vec![PoolSpec {
                name: "p".into(),
                ranges: vec![AddrRange::parse("192.0.2.200/30").unwrap()],
                namespaces: vec![],
            }],
        }
    }

    fn svc(json: &str) -> (String, Service) {
        let s: Service = serde_json::from_str(json).unwrap();
        (key_of(&s), s)
    }

    #[test]
    fn only_served_services_are_planned_and_the_status_decides_what_is_announced() {
        let all: BTreeMap<String, Service> = [
            svc(r#"{"metadata":{"name":"a","namespace":"x","creationTimestamp":"2026-01-01T00:00:00Z"},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"xvip.io/lb","ports":[{"port":80}]}}"#),
            svc(r#"{"metadata":{"name":"b","namespace":"x","creationTimestamp":"2026-01-02T00:00:00Z"},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"xvip.io/lb"},
                    "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.201"}]}}}"#),
            svc(r#"{"metadata":{"name":"c","namespace":"x"},"spec":{"type":"LoadBalancer"}}"#),
            svc(r#"{"metadata":{"name":"d","namespace":"x"},"spec":{"type":"ClusterIP"}}"#),
            svc(r#"{"metadata":{"name":"e","namespace":"x"},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"other"}}"#),
            svc(r#"{"metadata":{"name":"f","namespace":"x","annotations":{"xvip.io/loadbalancer-ips":"nope"}},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"xvip.io/lb"},
                    "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.203"}]}}}"#),
        ]
        .into_iter()
        .collect();
        let st = step(&settings(), &all, &BTreeSet::new());
        assert_eq!(st.plan.len(), 3, "{:?}", st.plan);
        assert_eq!(
            st.writes["x/a"],
            vec!["192.0.2.200".parse::<IpAddr>().unwrap()]
        );
        assert!(!st.writes.contains_key("x/b"), "b's status is kept");
        assert_eq!(
            st.writes["x/f"],
            Vec::<IpAddr>::new(),
            "a bad request clears"
        );
        assert!(matches!(&st.plan["x/f"], Outcome::Refused(w) if w.contains("\"nope\"")));
        assert_eq!(
            st.announce,
            ["192.0.2.201".parse::<IpAddr>().unwrap()].into(),
            "only what a status holds"
        );
        // A Service that turned into a ClusterIP one has its pool address cleared.
        let mut all = all;
        let (k, s) = svc(
            r#"{"metadata":{"name":"g","namespace":"x"},"spec":{"type":"ClusterIP"},
                    "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.202"}]}}}"#,
        );
        all.insert(k, s);
        let (k, s) = svc(
            r#"{"metadata":{"name":"h","namespace":"x"},"spec":{"type":"ClusterIP"},
                    "status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.1"}]}}}"#,
        );
        all.insert(k, s);
        let st = step(&settings(), &all, &BTreeSet::new());
        assert_eq!(st.writes["x/g"], Vec::<IpAddr>::new());
        assert!(
            !st.writes.contains_key("x/h"),
            "not a pool address: not ours"
        );
        // With the default class, c is served too.
        let st = step(
            &ServicesSettings {
                default_class: true,
                ..settings()
            },
            &all,
            &BTreeSet::new(),
        );
        assert!(st.plan.contains_key("x/c"));
    }

    #[test]
    fn a_local_service_is_announced_only_where_it_has_an_endpoint() {
        let (k, s) = svc(r#"{"metadata":{"name":"l","namespace":"x"},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"xvip.io/lb","externalTrafficPolicy":"Local"},
                    "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.200"}]}}}"#);
        let all = BTreeMap::from([(k.clone(), s)]);
        let st = step(&settings(), &all, &BTreeSet::new());
        assert!(st.announce.is_empty());
        assert!(st.no_local.contains(&k));
        assert!(
            st.writes.is_empty(),
            "the status stays: another node may serve it"
        );
        let st = step(&settings(), &all, &BTreeSet::from([k.clone()]));
        assert_eq!(st.announce.len(), 1);
        assert!(st.no_local.is_empty());
    }

    #[test]
    fn a_written_status_is_announced_and_not_written_again() {
        let (k, s) = svc(r#"{"metadata":{"name":"a","namespace":"x"},
                    "spec":{"type":"LoadBalancer","loadBalancerClass":"xvip.io/lb"}}"#);
        let mut all = BTreeMap::from([(k.clone(), s)]);
        let st = step(&settings(), &all, &BTreeSet::new());
        let addrs = st.writes[&k].clone();
        let written = with_status(&all[&k], &addrs);
        all.insert(k.clone(), written);
        let st = step(&settings(), &all, &BTreeSet::new());
        assert!(st.writes.is_empty());
        assert_eq!(st.announce.into_iter().collect::<Vec<_>>(), addrs);
    }

    #[test]
    fn a_hostile_service_list_costs_bounded_work() {
        // More Services than served, each with far too many ports, requested addresses and
        // a huge sharing key: the oldest MAX_SERVICES are planned, the rest counted.
        let ports: Vec<serde_json::Value> = (0..5000)
            .map(|p| serde_json::json!({"port": p, "protocol": "TCP"}))
            .collect();
        let many_ips = (0..1000)
            .map(|i| format!("192.0.2.{}", i % 250))
            .collect::<Vec<_>>()
            .join(",");
        let all: BTreeMap<String, Service> = (0..MAX_SERVICES + 200)
            .map(|i| {
                let s: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s{i:05}"), "namespace": "x",
                                 "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", i / 3600, (i / 60) % 60, i % 60),
                                 "annotations": if i == 0 {
                                     serde_json::json!({ANNOTATION_SHARED: "k".repeat(100_000)})
                                 } else {
                                     serde_json::json!({})
                                 }},
                    "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                             "ports": if i == 0 { ports.clone() } else { vec![] }},
                    "status": {"loadBalancer": {"ingress": (0..100).map(|j| serde_json::json!({"ip": format!("192.0.2.{j}")})).collect::<Vec<_>>()}}
                }))
                .unwrap();
                (key_of(&s), s)
            })
            .collect();
        let r = request_of(&all["x/s00000"]).unwrap();
        assert_eq!(r.ports.len(), 256);
        assert_eq!(r.current.len(), 2);
        assert_eq!(r.sharing.unwrap().len(), 253);
        let mut s0 = all["x/s00000"].clone();
        s0.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_IPS.into(), many_ips);
        assert_eq!(request_of(&s0).unwrap().requested.len(), 3);
        let started = std::time::Instant::now();
        let st = step(&settings(), &all, &BTreeSet::new());
        assert_eq!(st.ignored, 200);
        assert_eq!(st.plan.len(), MAX_SERVICES);
        assert!(
            !st.plan.contains_key(&format!("x/s{:05}", MAX_SERVICES)),
            "the newest wait"
        );
        // Four addresses for a thousand Services: four assigned, the rest refused, and the
        // statuses naming foreign addresses are rewritten.
        let assigned = st
            .plan
            .values()
            .filter(|o| matches!(o, Outcome::Assigned(_)))
            .count();
        assert_eq!(assigned, 4);
        assert_eq!(st.writes.len(), MAX_SERVICES);
        println!(
            "a hostile list of {} Services planned in {:?}",
            all.len(),
            started.elapsed()
        );
    }

    #[test]
    fn families_follow_the_policy_and_requests_parse() {
        let (_, s) = svc(
            r#"{"metadata":{"name":"a","namespace":"x","annotations":{"kube-vip.io/loadbalancerIPs":"192.0.2.9, 2001:db8::9"}},
                    "spec":{"type":"LoadBalancer","ipFamilies":["IPv6","IPv4"],"ipFamilyPolicy":"PreferDualStack"}}"#,
        );
        let r = request_of(&s).unwrap();
        assert_eq!(r.families, vec![Family::V6, Family::V4]);
        assert!(!r.all_families);
        assert_eq!(r.requested.len(), 2);
        let (_, s) = svc(
            r#"{"metadata":{"name":"a"},"spec":{"type":"LoadBalancer","ipFamilies":["IPv6","IPv4"],"ipFamilyPolicy":"SingleStack","loadBalancerIP":"2001:db8::1"}}"#,
        );
        let r = request_of(&s).unwrap();
        assert_eq!(r.families, vec![Family::V6]);
        assert_eq!(r.namespace, "default");
        assert_eq!(r.requested, vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
    }
}
