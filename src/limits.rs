//! Process limits a server with many sockets needs raised. Not configuration: it only asks the
//! kernel for what the hard limit already allows.

/// Raises the open-file soft limit to the hard limit; returns the limit now in force (0 if it
/// cannot be read).
pub fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit on this process with a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        l.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_at_least_what_it_was() {
        // SAFETY: getrlimit into a local struct.
        let before = unsafe {
            let mut l: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur
        };
        assert!(super::raise_open_files() >= before);
    }
}
