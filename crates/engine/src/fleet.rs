//! A fleet of clusters: where each declared tenant lives (sticky placement), from each cluster's
//! inventory of database markers. Pure: the CLI reads the inventories ([`inventory`]) and plans
//! each cluster with the tenants placed on it.
//!
//! Rules, in order, for each declared tenant:
//! 1. found on one reachable cluster (its database carries our marker for it): it stays there;
//!    when the spec or config would now choose another cluster, that is reported
//!    ([`Placement::would_place`]), never acted on;
//! 2. found on several clusters: reported with every name, planned on none (nothing dropped);
//! 3. not found while some cluster is unreachable: held (it might live there), reported;
//! 4. new: `cluster:` of the spec, else the reachable clusters whose labels match
//!    `placement.labels` (default `tier` = the tenant's environment, when some cluster has a `tier`
//!    label), else all; among them the most headroom ([`Headroom`]): the lowest fill of its
//!    fullest resource (tenants of `maxTenants`, size of `maxSize`, connections in use of
//!    `max_connections`), then the fewest tenants, then the smallest total size, then config
//!    order; clusters at capacity are skipped.

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_spec::Environment;
use serde::Serialize;

/// The label that the default placement matches against a tenant's environment.
pub const TIER_LABEL: &str = "tier";

/// One cluster as placement sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub max_tenants: Option<u32>,
    pub max_size_bytes: Option<u64>,
    /// None: unreachable (down, or refused the control role); else what it holds.
    pub inventory: Option<Inventory>,
}

/// The managed tenant databases of one cluster.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Tenant ids (`ns/db`) whose database marker is on the cluster (orphans included).
    pub tenants: BTreeSet<String>,
    /// Total size of those databases, in bytes (those the control role may not measure count 0).
    pub size_bytes: u64,
    /// Sessions connected to its databases when it was read.
    pub connections: u64,
    /// The sessions the server allows clients other than superusers (`max_connections` less the
    /// reserved ones); 0: not known.
    pub usable_connections: u64,
}

/// Reads `connector`'s cluster's inventory: one query over `pg_database` (markers, sizes the control
/// role may read). An error means the cluster is unreachable for this run.
pub async fn inventory(connector: &crate::Connector) -> Result<Inventory, crate::EngineError> {
    let client = connector.connect(None).await?;
    let rows = client
        .query(
            "SELECT pg_catalog.shobj_description(d.oid, 'pg_database'),
                    CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT')
                           OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
                         THEN pg_catalog.pg_database_size(d.oid) END
               FROM pg_catalog.pg_database d
              WHERE NOT d.datistemplate",
            &[],
        )
        .await
        .map_err(|source| crate::EngineError::Catalog {
            database: None,
            source,
        })?;
    let sessions =
        client
            .query_one(CONNECTIONS, &[])
            .await
            .map_err(|source| crate::EngineError::Catalog {
                database: None,
                source,
            })?;
    let mut inventory = Inventory {
        connections: sessions.get::<_, i64>(0).max(0) as u64,
        usable_connections: sessions.get::<_, i32>(1).max(0) as u64,
        ..Inventory::default()
    };
    for row in rows {
        let comment: Option<String> = row.get(0);
        let Some(marker) = comment.as_deref().and_then(crate::desired::Marker::parse) else {
            continue;
        };
        // A copy `pgtenant move` left behind is an orphan, not a home of the tenant.
        if marker.role.is_some() || marker.moved_to.is_some() {
            continue;
        }
        let size: Option<i64> = row.get(1);
        inventory.tenants.insert(marker.tenant);
        inventory.size_bytes += size.map_or(0, |s| s.max(0) as u64);
    }
    Ok(inventory)
}

/// Sessions in use, and those the server allows non-superusers. `pg_stat_database.numbackends`
/// counts every role's sessions for every role; `pg_stat_activity` hides the backend type of other
/// roles' sessions from a control role that is not a superuser.
const CONNECTIONS: &str = "
SELECT (SELECT COALESCE(pg_catalog.sum(numbackends), 0)::bigint FROM pg_catalog.pg_stat_database),
       pg_catalog.current_setting('max_connections')::int
         - pg_catalog.current_setting('superuser_reserved_connections')::int
         - COALESCE(pg_catalog.current_setting('reserved_connections', true)::int, 0)";

/// How full a cluster is, for choosing among candidates: the fill of its fullest resource first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Headroom {
    /// The highest of tenants / `maxTenants`, size / `maxSize` and connections in use / usable
    /// connections (the last in steps of a tenth, so the few sessions that come and go — this
    /// run's own among them — do not decide); each only where its limit is known.
    fill: f64,
    tenants: u64,
    size_bytes: u64,
}

impl Headroom {
    fn of(cluster: &ClusterView, tenants: u64, size_bytes: u64) -> Headroom {
        let ratio = |used: u64, limit: Option<u64>| match limit {
            Some(limit) if limit > 0 => used as f64 / limit as f64,
            _ => 0.0,
        };
        let connections = cluster.inventory.as_ref().map_or(0.0, |i| {
            (ratio(i.connections, Some(i.usable_connections)) * 10.0).floor() / 10.0
        });
        Headroom {
            fill: ratio(tenants, cluster.max_tenants.map(u64::from))
                .max(ratio(size_bytes, cluster.max_size_bytes))
                .max(connections),
            tenants,
            size_bytes,
        }
    }

    fn cmp(&self, other: &Headroom) -> std::cmp::Ordering {
        self.fill
            .total_cmp(&other.fill)
            .then(self.tenants.cmp(&other.tenants))
            .then(self.size_bytes.cmp(&other.size_bytes))
    }
}

/// What the spec says about one tenant's placement.
#[derive(Debug, Clone, Default)]
pub struct TenantWish {
    pub id: String,
    /// `cluster:`.
    pub cluster: Option<String>,
    /// `placement.labels`; empty: the default.
    pub labels: BTreeMap<String, String>,
    /// The tenant's environment (its own, else the platform's).
    pub environment: Option<Environment>,
}

/// Where a tenant is (or goes), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub tenant: String,
    /// The cluster it is planned on; None: planned nowhere this run (see `state`).
    pub cluster: Option<String>,
    /// `existing`, `new`, `duplicate` (planned on every cluster it is on, nothing dropped),
    /// `unreachable` (its recorded cluster is), `held` or `unplaceable`.
    pub state: &'static str,
    /// Where the spec and config would place it now, when that is not where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_place: Option<String>,
    /// Every cluster it was found on (`duplicate`), or its unreachable one (`unreachable`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub found_on: Vec<String>,
    pub reason: String,
}

/// The placement of every wished tenant, in the order given. `recorded`: each tenant's cluster as
/// the local state last recorded it, which says which tenants an unreachable cluster holds.
pub fn place(
    clusters: &[ClusterView],
    wishes: &[TenantWish],
    recorded: &BTreeMap<String, String>,
) -> Vec<Placement> {
    let any_unreachable = clusters.iter().find(|c| c.inventory.is_none());
    let tiered = clusters.iter().any(|c| c.labels.contains_key(TIER_LABEL));
    // Tenants placed during this run count against headroom like existing ones.
    let mut load: BTreeMap<&str, (u64, u64)> = clusters
        .iter()
        .filter_map(|c| {
            let inventory = c.inventory.as_ref()?;
            Some((
                c.name.as_str(),
                (inventory.tenants.len() as u64, inventory.size_bytes),
            ))
        })
        .collect();
    let mut placements = Vec::with_capacity(wishes.len());
    for wish in wishes {
        let found_on: Vec<String> = clusters
            .iter()
            .filter(|c| {
                c.inventory
                    .as_ref()
                    .is_some_and(|i| i.tenants.contains(&wish.id))
            })
            .map(|c| c.name.clone())
            .collect();
        let placement = match found_on.as_slice() {
            [home] => {
                let would = choose(clusters, wish, tiered, &load, Some(home));
                let would_place = would.ok().filter(|w| w != home);
                let reason = match &would_place {
                    Some(other) => format!(
                        "placement is sticky: it stays on `{home}` although the spec and config \
                         would place it on `{other}` now (`pgtenant move` moves it)"
                    ),
                    None => format!("it exists on `{home}`"),
                };
                Placement {
                    tenant: wish.id.clone(),
                    cluster: Some(home.clone()),
                    state: "existing",
                    would_place,
                    found_on: Vec::new(),
                    reason,
                }
            }
            [_, _, ..] => Placement {
                tenant: wish.id.clone(),
                cluster: None,
                state: "duplicate",
                would_place: None,
                reason: format!(
                    "its database is on {} clusters ({}): nothing is changed or dropped on any of \
                     them until only one holds it",
                    found_on.len(),
                    found_on.join(", ")
                ),
                found_on,
            },
            [] => match any_unreachable {
                Some(_)
                    if recorded.get(&wish.id).is_some_and(|home| {
                        clusters
                            .iter()
                            .any(|c| &c.name == home && c.inventory.is_none())
                    }) =>
                {
                    let home = &recorded[&wish.id];
                    Placement {
                        tenant: wish.id.clone(),
                        cluster: None,
                        state: "unreachable",
                        would_place: None,
                        found_on: vec![home.clone()],
                        reason: format!("its cluster `{home}` is unreachable"),
                    }
                }
                Some(down) => Placement {
                    tenant: wish.id.clone(),
                    cluster: None,
                    state: "held",
                    would_place: None,
                    found_on: Vec::new(),
                    reason: format!(
                        "not placed: cluster `{}` is unreachable and may hold it; creating it \
                         elsewhere could make a second copy",
                        down.name
                    ),
                },
                None => match choose(clusters, wish, tiered, &load, None) {
                    Ok(chosen) => {
                        let entry = load.entry(clusters_name(clusters, &chosen)).or_default();
                        entry.0 += 1;
                        Placement {
                            tenant: wish.id.clone(),
                            cluster: Some(chosen.clone()),
                            state: "new",
                            would_place: None,
                            found_on: Vec::new(),
                            reason: format!("placed on `{chosen}`"),
                        }
                    }
                    Err(why) => Placement {
                        tenant: wish.id.clone(),
                        cluster: None,
                        state: "unplaceable",
                        would_place: None,
                        found_on: Vec::new(),
                        reason: why,
                    },
                },
            },
        };
        placements.push(placement);
    }
    placements
}

/// The `&str` of `name` borrowed from `clusters` (for the load map's key).
fn clusters_name<'c>(clusters: &'c [ClusterView], name: &str) -> &'c str {
    clusters
        .iter()
        .find(|c| c.name == name)
        .map_or("", |c| c.name.as_str())
}

/// The cluster rules (a)–(c) choose for `wish`; `home` (an existing tenant's cluster) is not
/// counted against its own capacity. Err: why none can be chosen.
fn choose(
    clusters: &[ClusterView],
    wish: &TenantWish,
    tiered: bool,
    load: &BTreeMap<&str, (u64, u64)>,
    home: Option<&str>,
) -> Result<String, String> {
    if let Some(named) = &wish.cluster {
        let Some(cluster) = clusters.iter().find(|c| &c.name == named) else {
            return Err(format!("`cluster: {named}` names no cluster of the config"));
        };
        if home == Some(named.as_str()) {
            return Ok(named.clone());
        }
        if cluster.inventory.is_none() {
            return Err(format!("`cluster: {named}` is unreachable"));
        }
        if let Some(full) = at_capacity(cluster, load) {
            return Err(format!("`cluster: {named}` is at capacity ({full})"));
        }
        return Ok(named.clone());
    }
    let mut labels = wish.labels.clone();
    if labels.is_empty() && tiered {
        if let Some(environment) = wish.environment {
            labels.insert(TIER_LABEL.to_owned(), environment.as_str().to_owned());
        }
    }
    let matching: Vec<&ClusterView> = clusters
        .iter()
        .filter(|c| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .collect();
    if matching.is_empty() {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(format!("no cluster has the labels {}", wanted.join(", ")));
    }
    if let Some(home) = home.and_then(|h| matching.iter().find(|c| c.name == h)) {
        return Ok(home.name.clone());
    }
    let mut candidates: Vec<(Headroom, usize, &ClusterView)> = Vec::new();
    let mut full = Vec::new();
    for (order, cluster) in matching.iter().enumerate() {
        if cluster.inventory.is_none() {
            continue;
        }
        if let Some(why) = at_capacity(cluster, load) {
            full.push(format!("`{}` ({why})", cluster.name));
            continue;
        }
        let (tenants, size) = load.get(cluster.name.as_str()).copied().unwrap_or_default();
        candidates.push((Headroom::of(cluster, tenants, size), order, cluster));
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    match candidates.first() {
        Some((_, _, cluster)) => Ok(cluster.name.clone()),
        None if !full.is_empty() => Err(format!(
            "every cluster it may go to is at capacity: {}",
            full.join(", ")
        )),
        None => Err("every cluster it may go to is unreachable".to_owned()),
    }
}

/// Which limit `cluster` has reached, if any.
fn at_capacity(cluster: &ClusterView, load: &BTreeMap<&str, (u64, u64)>) -> Option<String> {
    let (tenants, size) = load.get(cluster.name.as_str()).copied().unwrap_or_default();
    if let Some(max) = cluster.max_tenants.filter(|max| tenants >= u64::from(*max)) {
        return Some(format!("{tenants} of maxTenants {max}"));
    }
    if let Some(max) = cluster.max_size_bytes.filter(|max| size >= *max) {
        return Some(format!("{size} bytes of maxSize {max}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, labels: &[(&str, &str)], tenants: &[&str]) -> ClusterView {
        ClusterView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inventory: Some(Inventory {
                tenants: tenants.iter().map(|t| t.to_string()).collect(),
                ..Inventory::default()
            }),
            ..ClusterView::default()
        }
    }

    fn wish(id: &str) -> TenantWish {
        TenantWish {
            id: id.into(),
            ..TenantWish::default()
        }
    }

    fn placed(
        clusters: &[ClusterView],
        wishes: &[TenantWish],
    ) -> Vec<(Option<String>, &'static str)> {
        place(clusters, wishes, &BTreeMap::new())
            .into_iter()
            .map(|p| (p.cluster, p.state))
            .collect()
    }

    #[test]
    fn an_explicit_cluster_wins() {
        let clusters = [cluster("a", &[], &[]), cluster("b", &[], &["x/full"])];
        let to_b = TenantWish {
            cluster: Some("b".into()),
            ..wish("ns/one")
        };
        assert_eq!(placed(&clusters, &[to_b]), [(Some("b".into()), "new")]);
        let unknown = TenantWish {
            cluster: Some("c".into()),
            ..wish("ns/one")
        };
        let p = &place(&clusters, &[unknown], &BTreeMap::new())[0];
        assert_eq!((p.state, p.cluster.as_deref()), ("unplaceable", None));
    }

    #[test]
    fn labels_then_the_tier_of_the_environment_choose() {
        let clusters = [
            cluster("prod", &[("tier", "production"), ("region", "eu")], &[]),
            cluster("dev", &[("tier", "dev")], &[]),
        ];
        let eu = TenantWish {
            labels: [("region".into(), "eu".into())].into(),
            ..wish("ns/a")
        };
        let dev = TenantWish {
            environment: Some(Environment::Dev),
            ..wish("ns/b")
        };
        let production = TenantWish {
            environment: Some(Environment::Production),
            ..wish("ns/c")
        };
        assert_eq!(
            placed(&clusters, &[eu, dev, production]),
            [
                (Some("prod".into()), "new"),
                (Some("dev".into()), "new"),
                (Some("prod".into()), "new")
            ]
        );
        let staging = TenantWish {
            environment: Some(Environment::Staging),
            ..wish("ns/d")
        };
        assert_eq!(
            place(&clusters, &[staging], &BTreeMap::new())[0].state,
            "unplaceable"
        );
    }

    #[test]
    fn the_most_headroom_wins_and_full_clusters_are_skipped() {
        let mut a = cluster("a", &[], &["t/1", "t/2"]);
        a.max_tenants = Some(10);
        let mut b = cluster("b", &[], &["t/3"]);
        b.max_tenants = Some(2);
        let mut c = cluster("c", &[], &["t/4"]);
        c.max_tenants = Some(100);
        // c: 1/100, a: 2/10, b: 1/2; then c is still emptiest.
        assert_eq!(
            placed(
                &[a.clone(), b.clone(), c.clone()],
                &[wish("n/x"), wish("n/y")]
            ),
            [(Some("c".into()), "new"), (Some("c".into()), "new")]
        );
        // Without maxTenants, the smaller total size wins; at capacity, skipped.
        c.max_tenants = Some(1);
        a.inventory.as_mut().unwrap().size_bytes = 10;
        b.max_tenants = None;
        b.inventory.as_mut().unwrap().size_bytes = 5;
        a.max_tenants = None;
        assert_eq!(
            placed(&[a.clone(), b, c.clone()], &[wish("n/x")]),
            [(Some("b".into()), "new")]
        );
        a.max_tenants = Some(2);
        let p = &place(&[a, c], &[wish("n/x")], &BTreeMap::new())[0];
        assert_eq!(p.state, "unplaceable");
        assert!(p.reason.contains("at capacity"), "{}", p.reason);
    }

    #[test]
    fn headroom_counts_tenants_without_a_limit_connections_in_use_and_max_size() {
        let sessions = |mut c: ClusterView, connections: u64| {
            let inventory = c.inventory.as_mut().unwrap();
            inventory.connections = connections;
            inventory.usable_connections = 100;
            c
        };
        // No limits declared: the fewest tenants, not config order.
        let busy = sessions(cluster("a", &[], &["t/1", "t/2"]), 3);
        let idle = sessions(cluster("c", &[], &[]), 8);
        assert_eq!(
            placed(&[busy.clone(), idle.clone()], &[wish("n/x")]),
            [(Some("c".into()), "new")],
            "3 or 8 sessions of 100 is the same headroom: the tenant count decides"
        );
        // A server nearly out of connections is the fullest, however few tenants it has.
        let crowded = sessions(cluster("c", &[], &[]), 90);
        assert_eq!(
            placed(&[crowded.clone(), busy.clone()], &[wish("n/x")]),
            [(Some("a".into()), "new")]
        );
        // maxSize: 80 of 100 bytes is fuller than 2 of 10 tenants.
        let mut big = cluster("b", &[], &["t/3"]);
        big.max_size_bytes = Some(100);
        big.inventory.as_mut().unwrap().size_bytes = 80;
        let mut roomy = cluster("d", &[], &["t/4", "t/5"]);
        roomy.max_tenants = Some(10);
        assert_eq!(
            placed(&[big.clone(), roomy], &[wish("n/x")]),
            [(Some("d".into()), "new")]
        );
        big.inventory.as_mut().unwrap().size_bytes = 100;
        let p = &place(&[big], &[wish("n/x")], &BTreeMap::new())[0];
        assert_eq!(p.state, "unplaceable");
        assert!(
            p.reason.contains("100 bytes of maxSize 100"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn an_existing_tenant_stays_and_a_different_choice_is_reported() {
        let mut a = cluster("a", &[("tier", "dev")], &["n/x"]);
        a.max_tenants = Some(1);
        let b = cluster("b", &[("tier", "production")], &[]);
        let moved = TenantWish {
            environment: Some(Environment::Production),
            ..wish("n/x")
        };
        let p = &place(&[a.clone(), b.clone()], &[moved], &BTreeMap::new())[0];
        assert_eq!((p.cluster.as_deref(), p.state), (Some("a"), "existing"));
        assert_eq!(p.would_place.as_deref(), Some("b"));
        // At its own capacity it still stays, with nothing to report.
        let stays = TenantWish {
            environment: Some(Environment::Dev),
            ..wish("n/x")
        };
        let p = &place(&[a, b], &[stays], &BTreeMap::new())[0];
        assert_eq!(
            (p.cluster.as_deref(), p.would_place.as_deref()),
            (Some("a"), None)
        );
    }

    #[test]
    fn a_tenant_on_two_clusters_is_planned_on_neither() {
        let p = &place(
            &[cluster("a", &[], &["n/x"]), cluster("b", &[], &["n/x"])],
            &[wish("n/x")],
            &BTreeMap::new(),
        )[0];
        assert_eq!((p.state, p.cluster.as_deref()), ("duplicate", None));
        assert_eq!(p.found_on, ["a", "b"]);
    }

    #[test]
    fn an_unreachable_cluster_holds_unknown_tenants_but_not_known_ones() {
        let down = ClusterView {
            name: "down".into(),
            ..ClusterView::default()
        };
        let up = cluster("up", &[], &["n/known"]);
        assert_eq!(
            placed(
                &[up.clone(), down.clone()],
                &[wish("n/known"), wish("n/new")]
            ),
            [(Some("up".into()), "existing"), (None, "held")]
        );
        let recorded = BTreeMap::from([("n/there".to_owned(), "down".to_owned())]);
        let p = &place(&[up, down], &[wish("n/there")], &recorded)[0];
        assert_eq!((p.state, p.cluster.as_deref()), ("unreachable", None));
    }
}
