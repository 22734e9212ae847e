//! Linux: `/proc/cpuinfo`, cpufreq, `/proc/meminfo`, `statvfs` on the
//! scratch directory, and `/sys/class/drm/card*` for GPUs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use askee_core::wire::v1::{CpuInfo, GpuInfo, MemoryInfo, StorageInfo};

use super::Host;
use crate::profile::ProfileError;

fn read(path: &Path) -> Result<String, ProfileError> {
    std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn host(scratch: &Path) -> Result<Host, ProfileError> {
    Ok(Host {
        cpu: cpu()?,
        memory: memory()?,
        storage: storage(scratch)?,
        gpus: gpus(Path::new("/sys/class/drm")),
    })
}

fn cpu() -> Result<CpuInfo, ProfileError> {
    let info = read(Path::new("/proc/cpuinfo"))?;
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("cpu model"))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    // cpufreq's maximum (kHz) when the kernel exposes it, else /proc/cpuinfo's
    // current MHz (VMs often have only that), else unknown.
    let frequency_mhz =
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|khz| (khz / 1000) as u32)
            .or_else(|| {
                field("cpu MHz")
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|m| m as u32)
            })
            .unwrap_or(0);
    Ok(CpuInfo {
        arch: std::env::consts::ARCH.to_owned(),
        model,
        cores,
        frequency_mhz,
    })
}

fn memory() -> Result<MemoryInfo, ProfileError> {
    let path = Path::new("/proc/meminfo");
    let text = read(path)?;
    let kb = |name: &str| -> Result<u64, ProfileError> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProfileError::Malformed {
                path: path.to_owned(),
                detail: format!("no {name}"),
            })
    };
    Ok(MemoryInfo {
        total_mb: kb("MemTotal:")? / 1024,
        available_mb: kb("MemAvailable:")? / 1024,
    })
}

/// The nearest existing directory at or above `p` (the scratch directory
/// may not exist before the first task).
fn existing(p: &Path) -> PathBuf {
    let mut cur = p.to_owned();
    while !cur.exists() {
        match cur.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => cur = parent.to_owned(),
            _ => return PathBuf::from("/"),
        }
    }
    cur
}

fn storage(scratch: &Path) -> Result<StorageInfo, ProfileError> {
    let dir = existing(scratch);
    let err = |source| ProfileError::Statvfs {
        path: dir.clone(),
        source,
    };
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `st`
    // is a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    let gib = |blocks: u64| blocks.saturating_mul(frsize) >> 30;
    Ok(StorageInfo {
        free_gb: gib(st.f_bavail as u64),
        total_gb: gib(st.f_blocks as u64),
    })
}

/// DRM cards (`card0`, not the `card0-HDMI-A-1` connectors): PCI vendor and
/// device ids, and amdgpu's VRAM size when the driver exposes it.
pub fn gpus(drm: &Path) -> Vec<GpuInfo> {
    let Ok(entries) = std::fs::read_dir(drm) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("card")
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| {
            let dev = drm.join(n).join("device");
            let attr = |a: &str| {
                std::fs::read_to_string(dev.join(a))
                    .map(|s| s.trim().to_owned())
                    .ok()
            };
            let vendor_id = attr("vendor")?;
            let vendor = match vendor_id.as_str() {
                "0x10de" => "NVIDIA".to_owned(),
                "0x1002" => "AMD".to_owned(),
                "0x8086" => "Intel".to_owned(),
                "0x1af4" => "virtio".to_owned(),
                "0x1234" => "QEMU".to_owned(),
                other => other.to_owned(),
            };
            let model = format!(
                "pci device {}",
                attr("device").unwrap_or_else(|| "unknown".into())
            );
            let memory_mb = attr("mem_info_vram_total")
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |b| b >> 20);
            Some(GpuInfo {
                vendor,
                model,
                memory_mb,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_come_from_cards_not_connectors() {
        let d = tempfile::tempdir().unwrap();
        for (card, vendor, vram) in [
            ("card0", "0x1002", Some("8589934592")),
            ("card1", "0x10de", None),
        ] {
            let dev = d.path().join(card).join("device");
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(dev.join("device"), "0x73bf\n").unwrap();
            if let Some(v) = vram {
                std::fs::write(dev.join("mem_info_vram_total"), v).unwrap();
            }
        }
        std::fs::create_dir_all(d.path().join("card0-HDMI-A-1")).unwrap();
        let g = gpus(d.path());
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].vendor.as_str(), g[0].memory_mb), ("AMD", 8192));
        assert_eq!((g[1].vendor.as_str(), g[1].memory_mb), ("NVIDIA", 0));
        assert!(gpus(&d.path().join("absent")).is_empty());
    }

    #[test]
    fn storage_measures_the_nearest_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let s = storage(&d.path().join("not/yet/made")).unwrap();
        assert!(s.total_gb >= s.free_gb);
    }
}
