//! CPU time and memory of proxy processes from /proc: pure parsers plus thin readers.

use std::path::PathBuf;

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value in kB of a `Key:   1234 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

fn proc_file(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Memory of a set of processes, summed, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kb: u64,
    /// VmHWM: peak resident since start or since the last [`reset_peak`].
    pub peak_kb: u64,
}

/// CPU seconds (user + system) used so far by all of `pids`; `None` if one cannot be read.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    let ticks_per_second = clock_ticks() as f64;
    let mut total = 0u64;
    for &pid in pids {
        let stat = std::fs::read_to_string(proc_file(pid, "stat")).ok()?;
        total += parse_stat_cpu_ticks(&stat)?;
    }
    Some(total as f64 / ticks_per_second)
}

/// Current and peak resident memory of all of `pids`, summed; `None` if one cannot be read.
pub fn memory(pids: &[u32]) -> Option<Memory> {
    let mut sum = Memory::default();
    for &pid in pids {
        let status = std::fs::read_to_string(proc_file(pid, "status")).ok()?;
        sum.rss_kb += parse_status_kb(&status, "VmRSS")?;
        sum.peak_kb += parse_status_kb(&status, "VmHWM")?;
    }
    Some(sum)
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux ≥ 4.0; needs
/// the process's owner or root). Returns whether every reset worked.
pub fn reset_peak(pids: &[u32]) -> bool {
    pids.iter()
        .all(|&pid| std::fs::write(proc_file(pid, "clear_refs"), "5").is_ok())
}

/// Hardware and kernel, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub memory: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            memory: parse_status_kb(&meminfo, "MemTotal")
                .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
                .unwrap_or_else(|| "unknown".to_owned()),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (envoy (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1290));
        assert_eq!(parse_stat_cpu_ticks("12 (short) S 1"), None);
    }

    #[test]
    fn status_values_in_kb() {
        let status = "Name:\tenvoy\nVmHWM:\t   71234 kB\nVmRSS:\t   70000 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(70000));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(71234));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(&[me]).is_some());
        let mem = memory(&[me]).expect("own status");
        assert!(mem.rss_kb > 0 && mem.peak_kb >= mem.rss_kb);
        assert_eq!(
            cpu_model("model name\t: AMD EPYC\n").as_deref(),
            Some("AMD EPYC")
        );
    }
}
