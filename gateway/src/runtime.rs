//! Shard runtimes: picking the I/O driver, building a monoio runtime on it, pinning threads.

use std::future::Future;
use std::io;

use crate::config::IoDriver;

/// The driver a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDriver {
    /// io_uring.
    IoUring,
    /// epoll.
    Epoll,
}

impl ResolvedDriver {
    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ResolvedDriver::IoUring => "io_uring",
            ResolvedDriver::Epoll => "epoll",
        }
    }
}

/// The I/O drivers compiled into this binary, space-separated, as `ringcast --version` names
/// them. Always both: [`block_on`] builds runtimes on monoio's `IoUringDriver` and
/// `LegacyDriver`, which exist only with monoio's `iouring` and `legacy` features (listed in
/// gateway/Cargo.toml), so a build without either does not compile. A macro, not a `const`, so
/// that `concat!` can put it into the version string at compile time.
#[macro_export]
macro_rules! compiled_drivers {
    () => {
        "io_uring epoll"
    };
}

/// Why the requested driver cannot run here.
#[derive(Debug, thiserror::Error)]
#[error("io_uring was requested but is not available here (kernel support, io_uring_disabled, seccomp, or MONOIO_FORCE_LEGACY_DRIVER)")]
pub struct DriverUnavailable;

/// Resolves `auto` to io_uring where the kernel supports the ops we need, else epoll.
pub fn resolve(requested: IoDriver) -> Result<ResolvedDriver, DriverUnavailable> {
    let uring = monoio::utils::detect_uring();
    match requested {
        IoDriver::Auto if uring => Ok(ResolvedDriver::IoUring),
        IoDriver::Auto | IoDriver::Epoll => Ok(ResolvedDriver::Epoll),
        IoDriver::IoUring if uring => Ok(ResolvedDriver::IoUring),
        IoDriver::IoUring => Err(DriverUnavailable),
    }
}

/// Runs `make()` to completion on a fresh monoio runtime with the given driver and a timer.
pub fn block_on<F, Fut>(driver: ResolvedDriver, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match driver {
        ResolvedDriver::IoUring => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(4096)
                .enable_timer()
                .build()?;
            Ok(rt.block_on(make()))
        }
        ResolvedDriver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(make()))
        }
    }
}

/// Pins the current thread to one core; logs and carries on if the kernel refuses.
pub fn pin_current_thread(core: usize) {
    if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
        tracing::warn!(core, error = %e, "could not pin shard thread");
    }
}
