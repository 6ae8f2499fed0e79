//! The data directory's identity: `<log.dirs>/meta.properties`, in Kafka's KRaft format.
//!
//! ```text
//! version=1
//! cluster.id=MkU3OEVBNTcwNTJENDM2Qk
//! node.id=1
//! directory.id=J8aAPcfLQt2bqs1JT_rMgQ
//! ```
//!
//! The file says which cluster and which node a directory belongs to. `karst storage format`
//! writes it ([`format`]); `karst server` checks it before touching any log ([`verify`]) so a
//! disk moved to the wrong machine, or a node started with another cluster's config, stops
//! instead of mixing two clusters' data. The no-argument single node formats itself
//! ([`load_or_format`]).
//!
//! The file is replaced atomically (temporary file, fsync, rename, fsync of the directory): a
//! crash leaves either no file or the whole file, never a half-written identity.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::cluster_id::new_cluster_id;

/// The identity file's name, as Kafka names it.
pub const META_PROPERTIES: &str = "meta.properties";

/// The only format version Karst reads and writes: Kafka's KRaft version (version 0 is the
/// ZooKeeper-era format with `broker.id`).
pub const META_PROPERTIES_VERSION: u32 = 1;

/// A directory's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: i32,
    /// Kafka's `directory.id` (KIP-858): a random id per log directory. Files written by
    /// older Karst versions have none.
    pub directory_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid meta.properties: {problem}")]
    Malformed { path: PathBuf, problem: String },
    #[error("data directory {dir} is already formatted (cluster.id={cluster_id}, node.id={node_id}); use --ignore-formatted to accept a directory formatted this way")]
    AlreadyFormatted {
        dir: PathBuf,
        cluster_id: String,
        node_id: i32,
    },
    #[error("data directory {dir} belongs to cluster {found}, not to cluster {expected}: refusing to mix two clusters' data (a disk moved to the wrong node, or a config for another cluster?)")]
    OtherCluster {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("data directory {dir} belongs to node.id {found}, but this node is node.id {expected}: refusing to start two nodes on one directory or one node on another's data (check node.id and log.dirs)")]
    OtherNode {
        dir: PathBuf,
        found: i32,
        expected: i32,
    },
}

impl MetaProperties {
    /// A new identity for `node_id` in `cluster_id`, with a fresh directory id.
    pub fn new(cluster_id: impl Into<String>, node_id: i32) -> MetaProperties {
        MetaProperties {
            cluster_id: cluster_id.into(),
            node_id,
            directory_id: Some(new_cluster_id()),
        }
    }

    /// Parses the Java-properties text Kafka writes (`key=value` lines, `#` comments).
    pub fn parse(text: &str) -> Result<MetaProperties, String> {
        let mut version = None;
        let mut cluster_id = None;
        let mut node_id = None;
        let mut directory_id = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("line {line:?} is not key=value"));
            };
            let value = value.trim().to_owned();
            match key.trim() {
                "version" => version = Some(value),
                "cluster.id" => cluster_id = Some(value),
                "node.id" => node_id = Some(value),
                "directory.id" => directory_id = Some(value),
                // Keys of newer formats are kept by Kafka and ignored here.
                _ => {}
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some("0") => {
                return Err("version=0 is the ZooKeeper-era format; Karst reads KRaft's version=1 (reformat the directory with `karst storage format`)".into())
            }
            Some(other) => return Err(format!("unsupported version={other}")),
            None => return Err("no version".into()),
        }
        let cluster_id = cluster_id
            .filter(|id| !id.is_empty())
            .ok_or("no cluster.id")?;
        let node_id = node_id
            .ok_or("no node.id")?
            .parse()
            .map_err(|error| format!("node.id: {error}"))?;
        Ok(MetaProperties {
            cluster_id,
            node_id,
            directory_id: directory_id.filter(|id| !id.is_empty()),
        })
    }

    /// The file's text; `writer` names the command in the leading comment.
    pub fn to_text(&self, writer: &str) -> String {
        let mut text = format!(
            "#\n#Written by {writer}\nversion={META_PROPERTIES_VERSION}\ncluster.id={}\nnode.id={}\n",
            self.cluster_id, self.node_id
        );
        if let Some(directory_id) = &self.directory_id {
            text.push_str(&format!("directory.id={directory_id}\n"));
        }
        text
    }

    /// Reads `dir/meta.properties`; `None` when the directory is not formatted.
    pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
        let path = dir.join(META_PROPERTIES);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(MetaPropertiesError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        MetaProperties::parse(&text)
            .map(Some)
            .map_err(|problem| MetaPropertiesError::Malformed { path, problem })
    }

    /// Writes `dir/meta.properties` atomically, creating `dir` if needed.
    pub fn write(&self, dir: &Path, writer: &str) -> Result<(), MetaPropertiesError> {
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| MetaPropertiesError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let temporary = dir.join(format!("{META_PROPERTIES}.tmp"));
        let path = dir.join(META_PROPERTIES);
        {
            use std::io::Write as _;
            let mut file =
                std::fs::File::create(&temporary).map_err(io_error("create", &temporary))?;
            file.write_all(self.to_text(writer).as_bytes())
                .map_err(io_error("write", &temporary))?;
            // The contents must be on disk before the rename makes them the identity.
            file.sync_all().map_err(io_error("fsync", &temporary))?;
        }
        std::fs::rename(&temporary, &path).map_err(io_error("rename into", &path))?;
        // The rename itself is only durable once the directory entry is.
        karst_storage::io::sync_directory(dir).map_err(io_error("fsync", dir))?;
        Ok(())
    }
}

impl fmt::Display for MetaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster.id={} node.id={}", self.cluster_id, self.node_id)?;
        if let Some(directory_id) = &self.directory_id {
            write!(f, " directory.id={directory_id}")?;
        }
        Ok(())
    }
}

/// Checks that `found` (read from `dir`) is this node's: same node id, and the same cluster
/// id when one is configured.
pub fn verify(
    dir: &Path,
    found: &MetaProperties,
    cluster_id: Option<&str>,
    node_id: i32,
) -> Result<(), MetaPropertiesError> {
    if let Some(expected) = cluster_id {
        if found.cluster_id != expected {
            return Err(MetaPropertiesError::OtherCluster {
                dir: dir.to_owned(),
                found: found.cluster_id.clone(),
                expected: expected.to_owned(),
            });
        }
    }
    if found.node_id != node_id {
        return Err(MetaPropertiesError::OtherNode {
            dir: dir.to_owned(),
            found: found.node_id,
            expected: node_id,
        });
    }
    Ok(())
}

/// What [`format`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatOutcome {
    /// The directory was not formatted; it is now.
    Formatted(MetaProperties),
    /// It already was, for the same cluster and node (only with `ignore_formatted`).
    AlreadyFormatted(MetaProperties),
}

/// `karst storage format`: writes the identity of `node_id` in `cluster_id` into `dir`.
///
/// A directory already formatted is refused, as by `kafka-storage format`, unless
/// `ignore_formatted`; a directory formatted for another cluster or node is refused even
/// then, since the node could never start on it.
pub fn format(
    dir: &Path,
    cluster_id: &str,
    node_id: i32,
    ignore_formatted: bool,
) -> Result<FormatOutcome, MetaPropertiesError> {
    if let Some(found) = MetaProperties::read(dir)? {
        verify(dir, &found, Some(cluster_id), node_id)?;
        if !ignore_formatted {
            return Err(MetaPropertiesError::AlreadyFormatted {
                dir: dir.to_owned(),
                cluster_id: found.cluster_id,
                node_id: found.node_id,
            });
        }
        return Ok(FormatOutcome::AlreadyFormatted(found));
    }
    let properties = MetaProperties::new(cluster_id, node_id);
    properties.write(dir, "karst storage format")?;
    Ok(FormatOutcome::Formatted(properties))
}

/// `karst server`'s start-up check: the directory's identity, verified against the config,
/// or, on a directory never formatted, a new one (with the configured cluster id, else a
/// fresh one) so the no-argument single node needs no format step.
pub fn load_or_format(
    dir: &Path,
    cluster_id: Option<&str>,
    node_id: i32,
) -> Result<MetaProperties, MetaPropertiesError> {
    if let Some(found) = MetaProperties::read(dir)? {
        verify(dir, &found, cluster_id, node_id)?;
        return Ok(found);
    }
    let cluster_id = cluster_id.map_or_else(new_cluster_id, str::to_owned);
    let properties = MetaProperties::new(cluster_id, node_id);
    properties.write(dir, "karst server")?;
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qk";
    const OTHER_CLUSTER: &str = "4L6g3nShT-eMCtK--X86sw";

    #[test]
    fn format_writes_kafka_s_kraft_meta_properties() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node1");

        let outcome = format(&data, CLUSTER, 1, false).unwrap();

        let FormatOutcome::Formatted(written) = outcome else {
            panic!("expected a fresh format, got {outcome:?}")
        };
        let text = std::fs::read_to_string(data.join(META_PROPERTIES)).unwrap();
        assert!(text.contains("\nversion=1\n"), "{text}");
        assert!(
            text.contains(&format!("\ncluster.id={CLUSTER}\n")),
            "{text}"
        );
        assert!(text.contains("\nnode.id=1\n"), "{text}");
        let directory_id = written.directory_id.clone().unwrap();
        assert!(
            text.contains(&format!("\ndirectory.id={directory_id}\n")),
            "{text}"
        );
        assert!(crate::cluster_id::parse_cluster_id(&directory_id).is_ok());
        assert_eq!(MetaProperties::read(&data).unwrap(), Some(written));
        assert!(
            !data.join("meta.properties.tmp").exists(),
            "the temporary file is renamed away"
        );
    }

    #[test]
    fn formatting_twice_is_refused_unless_ignore_formatted() {
        let dir = tempfile::tempdir().unwrap();
        let first = format(dir.path(), CLUSTER, 1, false).unwrap();

        let error = format(dir.path(), CLUSTER, 1, false).unwrap_err();
        assert!(
            matches!(error, MetaPropertiesError::AlreadyFormatted { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("--ignore-formatted"), "{error}");

        let FormatOutcome::Formatted(first) = first else {
            unreachable!()
        };
        let again = format(dir.path(), CLUSTER, 1, true).unwrap();
        assert_eq!(
            again,
            FormatOutcome::AlreadyFormatted(first),
            "the directory id is kept"
        );
    }

    #[test]
    fn a_directory_of_another_cluster_or_node_is_refused_even_with_ignore_formatted() {
        let dir = tempfile::tempdir().unwrap();
        format(dir.path(), CLUSTER, 1, false).unwrap();

        let error = format(dir.path(), OTHER_CLUSTER, 1, true).unwrap_err();
        assert!(matches!(error, MetaPropertiesError::OtherCluster { .. }));
        let message = error.to_string();
        assert!(
            message.contains(CLUSTER) && message.contains(OTHER_CLUSTER),
            "{message}"
        );

        let error = format(dir.path(), CLUSTER, 2, true).unwrap_err();
        assert!(matches!(
            error,
            MetaPropertiesError::OtherNode {
                found: 1,
                expected: 2,
                ..
            }
        ));
    }

    #[test]
    fn start_up_formats_a_new_directory_and_verifies_a_formatted_one() {
        let dir = tempfile::tempdir().unwrap();
        let generated = load_or_format(dir.path(), None, 1).unwrap();
        assert!(crate::cluster_id::parse_cluster_id(&generated.cluster_id).is_ok());

        assert_eq!(load_or_format(dir.path(), None, 1).unwrap(), generated);
        assert_eq!(
            load_or_format(dir.path(), Some(&generated.cluster_id), 1).unwrap(),
            generated
        );
        assert!(matches!(
            load_or_format(dir.path(), Some(OTHER_CLUSTER), 1),
            Err(MetaPropertiesError::OtherCluster { .. })
        ));
        assert!(matches!(
            load_or_format(dir.path(), None, 3),
            Err(MetaPropertiesError::OtherNode { .. })
        ));
    }

    #[test]
    fn files_written_by_kafka_and_by_older_karst_parse() {
        let kafka = "#\n#Tue Mar 12 10:00:00 UTC 2024\nnode.id=3\ndirectory.id=J8aAPcfLQt2bqs1JT_rMgQ\nversion=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\n";
        let parsed = MetaProperties::parse(kafka).unwrap();
        assert_eq!(parsed.node_id, 3);
        assert_eq!(
            parsed.directory_id.as_deref(),
            Some("J8aAPcfLQt2bqs1JT_rMgQ")
        );

        let older_karst = "#\n#Written by karst server\nversion=1\ncluster.id=abc\nnode.id=1\n";
        assert_eq!(
            MetaProperties::parse(older_karst).unwrap().directory_id,
            None
        );
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let zookeeper = "version=0\nbroker.id=1\ncluster.id=x\n";
        assert!(MetaProperties::parse(zookeeper)
            .unwrap_err()
            .contains("ZooKeeper"));
        assert!(MetaProperties::parse("version=1\nnode.id=1\n")
            .unwrap_err()
            .contains("cluster.id"));
        assert!(
            MetaProperties::parse("version=1\ncluster.id=x\nnode.id=one\n")
                .unwrap_err()
                .contains("node.id")
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_PROPERTIES), "garbage\n").unwrap();
        let error = MetaProperties::read(dir.path()).unwrap_err();
        assert!(error.to_string().contains("meta.properties"), "{error}");
    }
}
