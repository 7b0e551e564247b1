//! Host tuning: the profiles in `tuning/profiles/` (built into the binary), the host audit
//! (`ringcast tune check`), applying a profile's sysctls (`ringcast tune apply`) and the core
//! layout `--cpu-profile` pins threads by.
//!
//! Every read and write goes through a root directory (`/` on a real host), so tests run the
//! audit and the apply against a fake `/proc` and `/sys` tree.

pub mod apply;
pub mod audit;
pub mod cores;

use std::path::{Path, PathBuf};

/// A tuning profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Its name (`low-latency`, `high-connections`, or a directory's name).
    pub name: String,
    /// The sysctl settings, in file order.
    pub sysctls: Vec<Sysctl>,
    /// The file-descriptor limit the process should have.
    pub nofile: u64,
    /// The core layout and what the audit insists on (`profile.toml`).
    pub settings: ProfileSettings,
}

/// One sysctl setting of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// The dotted key (`net.core.somaxconn`).
    pub key: String,
    /// The wanted value, whitespace-normalised (`4096 16384 8388608`).
    pub value: String,
    /// A higher current value also passes (`# check: at-least` above it).
    pub at_least: bool,
}

impl Sysctl {
    /// The file under `/proc/sys` that holds it.
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join("proc/sys").join(self.key.replace('.', "/"))
    }

    /// Whether `current` satisfies the setting.
    pub fn satisfied_by(&self, current: &str) -> bool {
        let current = normalise(current);
        if current == self.value {
            return true;
        }
        if !self.at_least {
            return false;
        }
        // Every field at least the wanted one (`tcp_mem` has three).
        let cur: Vec<Option<u64>> = current.split(' ').map(|f| f.parse().ok()).collect();
        let want: Vec<Option<u64>> = self.value.split(' ').map(|f| f.parse().ok()).collect();
        cur.len() == want.len()
            && cur
                .iter()
                .zip(&want)
                .all(|(c, w)| matches!((c, w), (Some(c), Some(w)) if c >= w))
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No built-in profile and no directory by that name.
    #[error("no profile `{0}` (built in: low-latency, high-connections; or give a directory)")]
    Unknown(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not parse.
    #[error("{file}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// A profile's `profile.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// The core layout.
    pub cores: cores::CoreProfile,
    /// What the audit checks beyond the sysctls.
    pub audit: AuditSettings,
}

/// What the audit checks beyond the sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Warn about sources of latency jitter: CPU frequency scaling, irqbalance, no isolated
    /// cores, transparent hugepages always on.
    pub latency: bool,
}

/// The profiles built into the binary: (name, sysctl.conf, limits.conf, profile.toml).
const BUILT_IN: [(&str, &str, &str, &str); 2] = [
    (
        "low-latency",
        include_str!("../../../tuning/profiles/low-latency/sysctl.conf"),
        include_str!("../../../tuning/profiles/low-latency/limits.conf"),
        include_str!("../../../tuning/profiles/low-latency/profile.toml"),
    ),
    (
        "high-connections",
        include_str!("../../../tuning/profiles/high-connections/sysctl.conf"),
        include_str!("../../../tuning/profiles/high-connections/limits.conf"),
        include_str!("../../../tuning/profiles/high-connections/profile.toml"),
    ),
];

impl Profile {
    /// A built-in profile by name, or a profile directory (with the same three files).
    pub fn load(name_or_dir: &str) -> Result<Profile, ProfileError> {
        if let Some((name, sysctl, limits, cores)) =
            BUILT_IN.iter().find(|(n, ..)| *n == name_or_dir)
        {
            return Profile::parse(name, sysctl, limits, cores);
        }
        let dir = Path::new(name_or_dir);
        if !dir.is_dir() {
            return Err(ProfileError::Unknown(name_or_dir.to_string()));
        }
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| ProfileError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let name = dir
            .file_name()
            .map_or(name_or_dir.to_string(), |n| n.to_string_lossy().to_string());
        Profile::parse(
            &name,
            &read("sysctl.conf")?,
            &read("limits.conf")?,
            &read("profile.toml")?,
        )
    }

    /// Parses a profile's three files.
    pub fn parse(
        name: &str,
        sysctl: &str,
        limits: &str,
        settings: &str,
    ) -> Result<Profile, ProfileError> {
        let bad = |file: &str, reason: String| ProfileError::Parse {
            file: format!("{name}/{file}"),
            reason,
        };
        let mut sysctls = Vec::new();
        let mut at_least = false;
        for (n, line) in sysctl.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                at_least = false;
                continue;
            }
            if let Some(comment) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
                if comment.trim() == "check: at-least" {
                    at_least = true;
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad("sysctl.conf", format!("line {}: no `=`", n + 1)));
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(bad("sysctl.conf", format!("line {}: bad key", n + 1)));
            }
            sysctls.push(Sysctl {
                key: key.to_string(),
                value: normalise(value),
                at_least,
            });
            at_least = false;
        }
        let nofile = limits
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[2] == "nofile").then(|| f[3].parse::<u64>().ok())
            })
            .flatten()
            .max()
            .ok_or_else(|| bad("limits.conf", "no nofile limit".into()))?;
        let settings =
            toml::from_str(settings).map_err(|e| bad("profile.toml", e.message().into()))?;
        Ok(Profile {
            name: name.to_string(),
            sysctls,
            nofile,
            settings,
        })
    }
}

/// Whitespace-normalised value (`4096\t16384  8388608` → `4096 16384 8388608`).
fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
