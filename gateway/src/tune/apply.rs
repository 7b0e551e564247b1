//! `ringcast tune apply`: the sysctls a profile changes, shown as a diff, then written (as root),
//! each change printed; the profile is also saved to `/etc/sysctl.d` so it survives a reboot.

use std::path::{Path, PathBuf};

use super::Profile;

/// One sysctl the profile would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The dotted key.
    pub key: String,
    /// Its value now (`None`: not readable).
    pub current: Option<String>,
    /// The profile's value.
    pub wanted: String,
    /// The file written.
    pub path: PathBuf,
}

/// Why applying stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Writing sysctls needs root.
    #[error("applying sysctls needs root (run with sudo, or use --dry-run to see the diff)")]
    NotRoot,
    /// A write failed; the changes before it were made (and printed).
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The settings under `root` that do not satisfy the profile.
pub fn plan(root: &Path, profile: &Profile) -> Vec<Change> {
    profile
        .sysctls
        .iter()
        .filter_map(|s| {
            let path = s.path(root);
            let current = std::fs::read_to_string(&path)
                .ok()
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "));
            match &current {
                Some(cur) if s.satisfied_by(cur) => None,
                _ => Some(Change {
                    key: s.key.clone(),
                    current,
                    wanted: s.value.clone(),
                    path,
                }),
            }
        })
        .collect()
}

/// The plan as a diff (`-` now, `+` after).
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "nothing to change: every sysctl already satisfies the profile\n".into();
    }
    let mut s = String::new();
    for c in changes {
        s.push_str(&format!(
            "- {} = {}\n+ {} = {}\n",
            c.key,
            c.current.as_deref().unwrap_or("(not readable)"),
            c.key,
            c.wanted
        ));
    }
    s
}

/// Whether this process runs as root (real uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Writes every change, then saves what the host needs at boot to
/// `<root>/etc/sysctl.d/90-ringcast.conf`: the profile's settings, except an `at-least` one the
/// host already exceeded (saving it would lower the host's value at the next boot). Each action
/// is reported to `log` as it is done, so a failure part way still shows what was changed.
pub fn apply(
    root: &Path,
    profile: &Profile,
    changes: &[Change],
    log: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    for c in changes {
        std::fs::write(&c.path, format!("{}\n", c.wanted)).map_err(|source| ApplyError::Write {
            path: c.path.display().to_string(),
            source,
        })?;
        log(format!(
            "set {} = {} (was {})",
            c.key,
            c.wanted,
            c.current.as_deref().unwrap_or("not readable")
        ));
    }
    let mut text = format!(
        "# Written by `ringcast tune apply --profile {0}`; why each setting is there:\n# tuning/profiles/{0}/sysctl.conf in the ringcast source.\n",
        profile.name
    );
    for s in &profile.sysctls {
        let changed = changes.iter().any(|c| c.key == s.key);
        if s.at_least && !changed {
            // Already above the minimum here: keep the host's own (higher) value.
            continue;
        }
        text.push_str(&format!("{} = {}\n", s.key, s.value));
    }
    let dir = root.join("etc/sysctl.d");
    let file = dir.join("90-ringcast.conf");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, text))
        .map_err(|source| ApplyError::Write {
            path: file.display().to_string(),
            source,
        })?;
    log(format!(
        "saved the profile's settings to {} (loaded at boot)",
        file.display()
    ));
    Ok(())
}
