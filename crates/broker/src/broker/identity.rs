//! `meta.properties`: which node, and once known which cluster, a data
//! directory belongs to.

use std::path::Path;

use super::StartError;

const META_PROPERTIES: &str = "meta.properties";

/// What `meta.properties` says of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DataDirIdentity {
    /// The directory was written by an earlier start of this node.
    pub(super) existed: bool,
    /// The cluster it belongs to, once recorded.
    pub(super) cluster_id: Option<String>,
}

/// Reads (or writes, on first start) `meta.properties`, refusing a data
/// directory that another node id wrote.
pub(super) fn check(data_dir: &Path, node_id: i32) -> Result<DataDirIdentity, StartError> {
    let path = data_dir.join(META_PROPERTIES);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let value = |key: &str| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, value)| value.trim().to_string())
        };
        match value("node.id").and_then(|v| v.parse().ok()) {
            Some(found) if found != node_id => {
                return Err(StartError::NodeIdMismatch {
                    dir: data_dir.display().to_string(),
                    found,
                    configured: node_id,
                });
            }
            Some(_) => {
                return Ok(DataDirIdentity {
                    existed: true,
                    cluster_id: value("cluster.id").filter(|id| !id.is_empty()),
                });
            }
            None => {}
        }
    }
    write(&path, &format!("version=1\nnode.id={node_id}\n"))?;
    Ok(DataDirIdentity {
        existed: false,
        cluster_id: None,
    })
}

/// Records the cluster id beside the node id.
pub(super) fn record_cluster_id(
    data_dir: &Path,
    node_id: i32,
    cluster_id: &str,
) -> Result<(), StartError> {
    write(
        &data_dir.join(META_PROPERTIES),
        &format!("version=1\nnode.id={node_id}\ncluster.id={cluster_id}\n"),
    )
}

fn write(path: &Path, text: &str) -> Result<(), StartError> {
    keel_log::write_atomically(path, text.as_bytes()).map_err(|e| StartError::DataDir {
        dir: path.display().to_string(),
        source: std::io::Error::other(e),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_data_dir_of_another_node_is_refused_and_the_cluster_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = check(dir.path(), 1).unwrap();
        assert_eq!((first.existed, first.cluster_id), (false, None));
        let again = check(dir.path(), 1).unwrap();
        assert_eq!((again.existed, again.cluster_id), (true, None));
        assert!(matches!(
            check(dir.path(), 2),
            Err(StartError::NodeIdMismatch { found: 1, .. })
        ));
        record_cluster_id(dir.path(), 1, "abc").unwrap();
        assert_eq!(
            check(dir.path(), 1).unwrap().cluster_id.as_deref(),
            Some("abc")
        );
    }
}
