//! The CPU time, resident memory and open files of the processes that make up a server (one, or a
//! cluster's nodes and its broker), read from procfs. Not sampling: two reads around a
//! measured window.

/// CPU seconds (user + system) the processes have used so far, summed; `None` if any is gone.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| cpu_seconds_of(pid)).sum()
}

/// Resident memory of the processes in KiB, summed; `None` if any is gone.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| rss_kib_of(pid)).sum()
}

/// Open file descriptors of one process; `None` if it is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(&[me]).is_some());
        let one = rss_kib(&[me]).unwrap();
        assert!(one > 0);
        assert!(rss_kib(&[me, me]).unwrap() >= 2 * one - 64);
        assert_eq!(cpu_seconds(&[me, u32::MAX]), None);
        // Other tests open and close files meanwhile, so only a floor is certain.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(open_fds(me).unwrap() >= 1);
        assert_eq!(open_fds(u32::MAX), None);
        drop(file);
    }
}
