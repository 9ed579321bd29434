//! Which clusters' trails a reader may search. One bucket can hold several
//! clusters' traces; whoever may query this cluster's trail must not thereby
//! read another cluster's. Only an admin namespace may look past the local
//! cluster, and only at the clusters the operator was told to open
//! (`--readable-clusters`). The same rule serves TraceQuery and the console.

/// The other clusters an admin namespace may read (`--readable-clusters`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadableClusters {
    /// These clusters' trails, beside the local one (empty: only the local one).
    Listed(Vec<String>),
    /// Every cluster found in the bucket (`*`).
    All,
}

impl Default for ReadableClusters {
    /// Only the local cluster.
    fn default() -> Self {
        Self::Listed(Vec::new())
    }
}

impl ReadableClusters {
    /// From the flag's comma-separated values: `*` anywhere means every
    /// cluster; nothing means only the local cluster.
    pub fn from_flag(values: &[String]) -> Self {
        let names: Vec<String> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect();
        if names.iter().any(|n| n == "*") {
            Self::All
        } else {
            Self::Listed(names)
        }
    }

    /// Only the local cluster: the operator's default.
    pub fn none() -> Self {
        Self::default()
    }

    fn allows(&self, cluster: &str) -> bool {
        match self {
            Self::All => true,
            Self::Listed(names) => names.iter().any(|n| n == cluster),
        }
    }

    /// The flag's value as a reader should see it in a refusal.
    fn describe(&self) -> String {
        match self {
            Self::All => "*".into(),
            Self::Listed(names) if names.is_empty() => "empty: only the local cluster".into(),
            Self::Listed(names) => names.join(","),
        }
    }

    /// The clusters a reader may name (for the console's picker): the local
    /// one, and for an admin namespace the listed ones or `*`.
    pub fn readable_by(&self, local: &str, tenant: Option<&str>) -> Vec<String> {
        let mut out = vec![local.to_string()];
        if tenant.is_none() {
            match self {
                Self::All => out.push("*".into()),
                Self::Listed(names) => out.extend(names.iter().filter(|n| *n != local).cloned()),
            }
        }
        out
    }

    /// The clusters a query searches: `requested` (empty: the local cluster)
    /// when every one of them may be read. `tenant` is the reader's namespace
    /// when it is not an admin namespace (as `Query::namespace_scope`).
    pub fn check(
        &self,
        local: &str,
        requested: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<String>, ClusterDenied> {
        if requested.is_empty() {
            return Ok(vec![local.to_string()]);
        }
        for cluster in requested.iter().filter(|c| *c != local) {
            if let Some(namespace) = tenant {
                return Err(ClusterDenied::NotAdmin {
                    namespace: namespace.to_string(),
                    local: local.to_string(),
                    cluster: cluster.clone(),
                });
            }
            if cluster == "*" {
                if *self != Self::All {
                    return Err(ClusterDenied::AllNotReadable {
                        readable: self.describe(),
                    });
                }
            } else if !self.allows(cluster) {
                return Err(ClusterDenied::NotReadable {
                    cluster: cluster.clone(),
                    readable: self.describe(),
                });
            }
        }
        Ok(requested.to_vec())
    }
}

/// Why a reader may not search a cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterDenied {
    #[error(
        "namespace {namespace:?} is not an admin namespace: it reads only this cluster's traces \
         ({local:?}), not {cluster:?}"
    )]
    NotAdmin {
        namespace: String,
        local: String,
        cluster: String,
    },
    #[error(
        "cluster {cluster:?} is not readable here: the operator's --readable-clusters \
         ({readable}) does not list it"
    )]
    NotReadable { cluster: String, readable: String },
    #[error(
        "\"*\" (every cluster) is not readable here: the operator's --readable-clusters is \
         {readable}, not *"
    )]
    AllNotReadable { readable: String },
}

impl ClusterDenied {
    /// A stable reason for a condition, an API answer or a metric label.
    pub fn reason(&self) -> crate::api::Reason {
        match self {
            Self::NotAdmin { .. } => crate::api::Reason::ClusterNotAllowed,
            Self::NotReadable { .. } | Self::AllNotReadable { .. } => crate::api::Reason::ClusterNotReadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_flag_lists_clusters_or_opens_all() {
        assert_eq!(ReadableClusters::from_flag(&[]), ReadableClusters::none());
        assert_eq!(
            ReadableClusters::from_flag(&v(&[" east", "", "west "])),
            ReadableClusters::Listed(v(&["east", "west"]))
        );
        assert_eq!(
            ReadableClusters::from_flag(&v(&["east", "*"])),
            ReadableClusters::All
        );
    }

    #[test]
    fn everyone_reads_the_local_cluster() {
        for readable in [ReadableClusters::none(), ReadableClusters::All] {
            for tenant in [Some("team"), None] {
                assert_eq!(readable.check("here", &[], tenant).unwrap(), v(&["here"]));
                assert_eq!(
                    readable.check("here", &v(&["here"]), tenant).unwrap(),
                    v(&["here"])
                );
            }
        }
    }

    #[test]
    fn a_tenant_reads_no_other_cluster_whatever_the_flag() {
        for readable in [ReadableClusters::All, ReadableClusters::Listed(v(&["east"]))] {
            for asked in [v(&["*"]), v(&["east"]), v(&["here", "east"]), v(&[""])] {
                let e = readable.check("here", &asked, Some("team")).unwrap_err();
                assert_eq!(e.reason().as_str(), "ClusterNotAllowed", "{asked:?}");
                assert!(
                    e.to_string().contains("\"team\" is not an admin namespace"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn an_admin_reads_the_listed_clusters_only() {
        let listed = ReadableClusters::Listed(v(&["east", "west"]));
        assert_eq!(
            listed.check("here", &v(&["here", "east"]), None).unwrap(),
            v(&["here", "east"])
        );
        let e = listed.check("here", &v(&["east", "north"]), None).unwrap_err();
        assert_eq!(
            e,
            ClusterDenied::NotReadable {
                cluster: "north".into(),
                readable: "east,west".into()
            }
        );
        assert!(e.to_string().contains("--readable-clusters"), "{e}");
        assert_eq!(listed.readable_by("here", None), v(&["here", "east", "west"]));
        assert_eq!(listed.readable_by("here", Some("team")), v(&["here"]));
        assert_eq!(ReadableClusters::All.readable_by("here", None), v(&["here", "*"]));
        let e = listed.check("here", &v(&["*"]), None).unwrap_err();
        assert_eq!(e.reason().as_str(), "ClusterNotReadable");
        let e = ReadableClusters::none()
            .check("here", &v(&["east"]), None)
            .unwrap_err();
        assert!(e.to_string().contains("only the local cluster"), "{e}");
        assert_eq!(
            ReadableClusters::All.check("here", &v(&["*"]), None).unwrap(),
            v(&["*"])
        );
        assert_eq!(
            ReadableClusters::All.check("here", &v(&["north"]), None).unwrap(),
            v(&["north"])
        );
    }
}
