//! Process limits a server with many sockets needs raised. Not configuration: it only asks the
//! kernel for what the hard limit already allows.
//!
//! Public for applications that embed the server: each connection is a file descriptor, and
//! the usual soft limit (1024) is reached long before the server is busy (accepts then fail
//! with `EMFILE`). The library never changes process limits itself, as that is the
//! application's call; call `raise_open_files` once at start, before `Server::builder()`, as the
//! `corecast` binary and the load generator do.
//!
//! ```no_run
//! let files = corecast::limits::raise_open_files();
//! println!("up to {files} open files");
//! ```

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
