//! Which pod a GPU process belongs to: `/proc/<pid>/cgroup` gives the pod's UID and the
//! container's id, and the kubelet's log directories give the pod's name, namespace and
//! container name.
//!
//! # The cgroup shapes
//! Kubernetes puts every container in a cgroup under `kubepods`, named after the pod
//! UID. With the `cgroupfs` driver the path reads
//! `/kubepods/burstable/pod<uid>/<container-id>`; with the `systemd` driver
//! `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`.
//! Guaranteed pods have no QoS level in the path. cgroup v1 lists one line per
//! hierarchy (`4:memory:/kubepods/...`), cgroup v2 a single `0::/kubepods...` line. A
//! reader in its own cgroup namespace sees paths relative to its root
//! (`0::/../../kubepods-besteffort-pod….slice/…`), so the parser looks for the pod
//! segment anywhere in the path.
//!
//! # The kubelet's directories
//! The kubelet writes container logs under `/var/log/pods/<namespace>_<pod>_<uid>/<container>/`
//! and links them as `/var/log/containers/<pod>_<namespace>_<container>-<container-id>.log`
//! (`kubelet/kuberuntime`: `BuildPodLogsDirectory`, `legacyLogSymlink`). Pod names,
//! namespaces and container names are DNS labels (no `_`), so both names split
//! unambiguously. A node exporter mounts both read-only; no API server access is needed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The pod and container ids found in a process's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupIds {
    /// The pod's UID, dashed (`6f1d9c4e-…`).
    pub pod_uid: String,
    /// The container's runtime id (64 hex digits), when the path has one.
    pub container_id: Option<String>,
}

/// Reads the pod and container ids out of the text of `/proc/<pid>/cgroup` (v1 or v2).
/// `None` when the process is not in a pod's cgroup (a host process, say).
#[must_use]
pub fn parse_cgroup(contents: &str) -> Option<CgroupIds> {
    contents.lines().find_map(|line| {
        // `hierarchy-id:controllers:path`; the path may itself contain ':' (it never does
        // for kubepods, but splitting at most twice keeps it whole).
        let mut parts = line.splitn(3, ':');
        let (_, _, path) = (parts.next()?, parts.next()?, parts.next()?);
        parse_cgroup_path(path)
    })
}

/// The pod and container ids in one cgroup path.
#[must_use]
pub fn parse_cgroup_path(path: &str) -> Option<CgroupIds> {
    let segments: Vec<&str> = path.split('/').collect();
    let (at, pod_uid) = segments.iter().enumerate().find_map(|(i, seg)| pod_uid_in(seg).map(|uid| (i, uid)))?;
    let container_id = segments[at + 1..].iter().find_map(|seg| container_id_in(seg));
    Some(CgroupIds { pod_uid, container_id })
}

/// `pod<uid>` (cgroupfs) or `kubepods[-qos]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_in(segment: &str) -> Option<String> {
    let seg = segment.strip_suffix(".slice").unwrap_or(segment);
    let seg = if let Some(rest) = seg.strip_prefix("kubepods") {
        // The systemd form names every ancestor slice in the leaf: take the last `-pod`.
        let (_, uid) = rest.rsplit_once("-pod")?;
        uid
    } else {
        seg.strip_prefix("pod")?
    };
    let uid = seg.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `<id>` (cgroupfs), `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`.
fn container_id_in(segment: &str) -> Option<String> {
    let seg = segment.strip_suffix(".scope").unwrap_or(segment);
    let id =
        ["cri-containerd-", "crio-", "docker-", "containerd-"].iter().find_map(|p| seg.strip_prefix(p)).unwrap_or(seg);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// A pod, as the exporter labels its series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// The namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

/// A container of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerRef {
    /// The pod.
    pub pod: PodRef,
    /// The container's name, when the directory knows it.
    pub container: Option<String>,
}

/// What is known about the pod of one GPU process.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribution {
    /// Nobody looked yet (the sampler's raw snapshot).
    NotLookedUp,
    /// The process runs in this pod's container.
    Pod(ContainerRef),
    /// The process is not in a pod's cgroup (a host process, or a non-Kubernetes container).
    NotAPod,
    /// The cgroup names a pod the directory does not know (just started, or gone).
    UnknownPod {
        /// The UID from the cgroup.
        uid: String,
    },
    /// Listed on a GPU in MIG mode, where NVML lists every MIG device's processes in
    /// aggregate: the process is attributed on its MIG device instead.
    MigAggregate,
    /// `/proc/<pid>/cgroup` could not be read (the process exited, or the exporter does
    /// not share the host's PID namespace).
    Unreadable {
        /// Why.
        reason: String,
    },
}

impl Attribution {
    /// The container, when the process was attributed to one.
    #[must_use]
    pub const fn container(&self) -> Option<&ContainerRef> {
        match self {
            Self::Pod(c) => Some(c),
            _ => None,
        }
    }
}

/// Why the kubelet's directories could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodDirectoryError {
    /// Listing a directory failed.
    #[error("listing {} failed", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Pod UIDs and container ids to names, read from the kubelet's log directories or
/// filled in by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDirectory {
    pods: BTreeMap<String, PodRef>,
    containers: BTreeMap<String, String>,
}

impl PodDirectory {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pod.
    pub fn insert_pod(&mut self, pod: PodRef) {
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// Adds a container id's name.
    pub fn insert_container(&mut self, container_id: &str, name: &str) {
        self.containers.insert(container_id.to_ascii_lowercase(), name.to_owned());
    }

    /// How many pods it knows.
    #[must_use]
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Reads `pods_dir` (`/var/log/pods`: `<namespace>_<pod>_<uid>` directories) and
    /// `containers_dir` (`/var/log/containers`: `<pod>_<namespace>_<container>-<id>.log`
    /// links). Entries whose names do not have those shapes are skipped; a directory
    /// that does not exist reads as empty (a node with no pods yet).
    ///
    /// # Errors
    /// When a directory exists but cannot be listed.
    pub fn from_kubelet_logs(pods_dir: &Path, containers_dir: &Path) -> Result<Self, PodDirectoryError> {
        let mut dir = Self::new();
        for name in list(pods_dir)? {
            let mut parts = name.splitn(3, '_');
            if let (Some(namespace), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next())
                && is_uuid(uid)
            {
                dir.insert_pod(PodRef { namespace: namespace.to_owned(), name: pod.to_owned(), uid: uid.to_owned() });
            }
        }
        for name in list(containers_dir)? {
            let Some(stem) = name.strip_suffix(".log") else { continue };
            let Some((front, id)) = stem.rsplit_once('-') else { continue };
            let Some(container) = front.splitn(3, '_').nth(2) else { continue };
            if container_id_in(id).is_some() && !container.is_empty() {
                dir.insert_container(id, container);
            }
        }
        Ok(dir)
    }

    /// The container the cgroup ids name, or why not.
    #[must_use]
    pub fn resolve(&self, ids: &CgroupIds) -> Attribution {
        match self.pods.get(&ids.pod_uid) {
            Some(pod) => Attribution::Pod(ContainerRef {
                pod: pod.clone(),
                container: ids.container_id.as_ref().and_then(|id| self.containers.get(id)).cloned(),
            }),
            None => Attribution::UnknownPod { uid: ids.pod_uid.clone() },
        }
    }
}

fn list(dir: &Path) -> Result<Vec<String>, PodDirectoryError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PodDirectoryError::List { path: dir.to_owned(), source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PodDirectoryError::List { path: dir.to_owned(), source })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Reads `<proc_root>/<pid>/cgroup`. The exporter runs with `hostPID: true` (NVML
/// reports host PIDs) and reads `/proc`; point it at a mount of the host's `/proc`
/// instead with `--proc-root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroups {
    root: PathBuf,
}

impl Default for ProcCgroups {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcCgroups {
    /// Reads under `root` (normally `/proc`).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pod of process `pid`, looked up in `directory`.
    #[must_use]
    pub fn attribute(&self, pid: u32, directory: &PodDirectory) -> Attribution {
        let path = self.root.join(pid.to_string()).join("cgroup");
        match fs::read_to_string(&path) {
            Ok(text) => parse_cgroup(&text).map_or(Attribution::NotAPod, |ids| directory.resolve(&ids)),
            Err(e) => Attribution::Unreadable { reason: format!("reading {} failed: {e}", path.display()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1d9c4e-2b7a-4c11-9d3e-0a1b2c3d4e5f";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn cgroup_v1_cgroupfs_driver() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CID}\n11:memory:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        );
        assert_eq!(parse_cgroup(&text), Some(CgroupIds { pod_uid: UID.into(), container_id: Some(CID.into()) }));
    }

    #[test]
    fn cgroup_v2_systemd_driver_guaranteed_and_besteffort() {
        let under = UID.replace('-', "_");
        let guaranteed = format!("0::/kubepods.slice/kubepods-pod{under}.slice/cri-containerd-{CID}.scope\n");
        let besteffort = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/crio-{CID}.scope\n"
        );
        for text in [guaranteed, besteffort] {
            let ids = parse_cgroup(&text).unwrap();
            assert_eq!(ids.pod_uid, UID);
            assert_eq!(ids.container_id.as_deref(), Some(CID));
        }
    }

    #[test]
    fn cgroup_namespace_relative_paths_and_non_pods() {
        let under = UID.replace('-', "_");
        let relative = format!("0::/../../kubepods-burstable-pod{under}.slice/docker-{CID}.scope");
        assert_eq!(parse_cgroup(&relative).unwrap().pod_uid, UID);
        assert_eq!(parse_cgroup("0::/system.slice/containerd.service\n"), None);
        assert_eq!(parse_cgroup("0::/\n"), None);
        assert_eq!(parse_cgroup("garbage without colons"), None);
        // The pod slice without a container scope (a process in the pod's sandbox cgroup).
        let bare = format!("0::/kubepods/pod{UID}");
        assert_eq!(parse_cgroup(&bare), Some(CgroupIds { pod_uid: UID.into(), container_id: None }));
        // Not a UUID: not a pod.
        assert_eq!(parse_cgroup("0::/kubepods/podnot-a-uid/abc"), None);
    }

    #[test]
    fn kubelet_log_dirs_give_names() {
        let tmp = tempfile::tempdir().unwrap();
        let pods = tmp.path().join("pods");
        let containers = tmp.path().join("containers");
        fs::create_dir_all(pods.join(format!("llm_vllm-7d9f-abcde_{UID}/vllm"))).unwrap();
        fs::create_dir_all(pods.join("not-a-pod-dir")).unwrap();
        fs::create_dir_all(&containers).unwrap();
        fs::write(containers.join(format!("vllm-7d9f-abcde_llm_vllm-server-{CID}.log")), "").unwrap();
        fs::write(containers.join("README"), "").unwrap();
        let dir = PodDirectory::from_kubelet_logs(&pods, &containers).unwrap();
        assert_eq!(dir.pod_count(), 1);
        let got = dir.resolve(&CgroupIds { pod_uid: UID.into(), container_id: Some(CID.into()) });
        let want = ContainerRef {
            pod: PodRef { namespace: "llm".into(), name: "vllm-7d9f-abcde".into(), uid: UID.into() },
            container: Some("vllm-server".into()),
        };
        assert_eq!(got, Attribution::Pod(want));
        let other = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            dir.resolve(&CgroupIds { pod_uid: other.into(), container_id: None }),
            Attribution::UnknownPod { uid: other.into() }
        );
        // Missing directories read as empty, not as an error.
        assert_eq!(
            PodDirectory::from_kubelet_logs(&tmp.path().join("x"), &tmp.path().join("y")).unwrap().pod_count(),
            0
        );
    }

    #[test]
    fn proc_cgroups_reads_per_pid_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("4242")).unwrap();
        fs::write(tmp.path().join("4242/cgroup"), format!("0::/kubepods/besteffort/pod{UID}/{CID}\n")).unwrap();
        fs::create_dir_all(tmp.path().join("1")).unwrap();
        fs::write(tmp.path().join("1/cgroup"), "0::/init.scope\n").unwrap();
        let mut dir = PodDirectory::new();
        dir.insert_pod(PodRef { namespace: "ns".into(), name: "p".into(), uid: UID.into() });
        let proc = ProcCgroups::new(tmp.path());
        assert!(
            matches!(proc.attribute(4242, &dir), Attribution::Pod(c) if c.pod.name == "p" && c.container.is_none())
        );
        assert_eq!(proc.attribute(1, &dir), Attribution::NotAPod);
        let Attribution::Unreadable { reason } = proc.attribute(999, &dir) else { panic!("expected unreadable") };
        assert!(reason.contains("999/cgroup"), "{reason}");
    }
}
