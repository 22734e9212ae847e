//! Parsers for the Linux kernel's text files the idle sources read. Pure, so
//! they are tested (and usable) on every platform.

/// `/proc/stat`'s aggregate `cpu` line: (total ticks, busy ticks), where
/// busy is everything but idle and iowait.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}

/// `/proc/<pid>/stat`: utime + stime in clock ticks.
pub fn parse_pid_stat_cpu(text: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split
    // after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `/proc/net/dev`: received plus sent bytes over every interface but `lo`.
pub fn parse_net_dev(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        // 8 receive fields, then 8 transmit fields; bytes first in each.
        sum = sum.saturating_add(*f.first()?).saturating_add(*f.get(8)?);
    }
    Some(sum)
}

/// `/proc/meminfo`: the share of memory in use, 1 − MemAvailable/MemTotal.
pub fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some(1.0 - (available.min(total) as f64 / total as f64))
}

/// `/proc/pressure/memory`: the `some avg10` percentage as a fraction.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?;
    let pct: f64 = v.parse().ok()?;
    (0.0..=100.0).contains(&pct).then_some(pct / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_busy_without_idle_and_iowait() {
        let t = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(t), Some((1000, 160)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn pid_stat_survives_spaces_and_parentheses_in_the_name() {
        let t = "4242 (a b) c)) S 1 1 1 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_pid_stat_cpu(t), Some(267));
        assert_eq!(parse_pid_stat_cpu("4242 (x) S 1"), None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 9999 10 0 0 0 0 0 0 9999 10 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 234 5 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(t), Some(1234));
    }

    #[test]
    fn meminfo_and_psi() {
        let m = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(m), Some(0.75));
        assert_eq!(parse_meminfo("MemTotal: 1000 kB\n"), None);
        let p = "some avg10=12.50 avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_avg10(p), Some(0.125));
        assert_eq!(parse_psi_some_avg10("some avg10=300.0\n"), None);
    }
}
