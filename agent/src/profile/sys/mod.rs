//! Host facts the profiler reads, one module per platform.

use askee_core::wire::v1::{CpuInfo, GpuInfo, MemoryInfo, StorageInfo};

pub struct Host {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub storage: StorageInfo,
    pub gpus: Vec<GpuInfo>,
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::host;

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::host;
