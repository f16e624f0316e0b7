//! Process hardening: no core dumps (for `serve` and for `init`, which holds the new shares
//! and root token), and, for `serve`, key memory kept out of swap where the operating system
//! allows it.
//!
//! `PR_SET_DUMPABLE = 0` and `RLIMIT_CORE = 0` keep key material out of core files (and stop
//! other processes of the same user from attaching with ptrace). `mlockall(MCL_CURRENT |
//! MCL_FUTURE | MCL_ONFAULT)` keeps every page in RAM from its first use; it is attempted only
//! when `RLIMIT_MEMLOCK` is unlimited, since with a small limit every later allocation past it
//! would fail. When locking is not possible a warning says how to allow it
//! (`LimitMEMLOCK=infinity` in the systemd unit).

/// What could be done, for the start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hardening {
    /// Core dumps are off.
    pub no_core_dumps: bool,
    /// Memory is locked.
    pub memory_locked: bool,
}

/// Turns core dumps off, warning on standard error if that is not possible; whether it was.
pub fn no_core_dumps() -> bool {
    // SAFETY: prctl(PR_SET_DUMPABLE) and setrlimit take plain integers and a valid pointer to a
    // local struct; neither touches memory we own otherwise.
    unsafe {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let done = libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
            && libc::setrlimit(libc::RLIMIT_CORE, &zero) == 0;
        if !done {
            eprintln!(
                "warning: could not turn core dumps off: a crash could write key material to disk"
            );
        }
        done
    }
}

/// Applies what the OS allows and warns about the rest on standard error; `warn_unlocked` says
/// whether memory that cannot be locked is worth a warning (not for a throwaway dev vault).
pub fn harden(warn_unlocked: bool) -> Hardening {
    let mut done = Hardening {
        no_core_dumps: no_core_dumps(),
        ..Hardening::default()
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local struct; mlockall takes flags only.
    let unlimited = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 }
        && limit.rlim_cur == libc::RLIM_INFINITY;
    if unlimited {
        // `MCL_ONFAULT` locks each page when it is first touched rather than at once: every
        // page that ever holds a byte is still kept out of swap, but address space an
        // allocator reserves ahead (mimalloc maps about a gigabyte read-write at start) is not
        // filled and pinned. Kernels before 4.4 refuse the flag (`EINVAL`); they lock at once.
        // SAFETY: as above.
        done.memory_locked = unsafe {
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) == 0
                || libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) == 0
        };
    }
    if !done.memory_locked && warn_unlocked {
        eprintln!(
            "warning: key memory is not locked and could be swapped to disk; allow it with an \
             unlimited RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity) or use encrypted swap"
        );
    }
    done
}

/// The effective user, as `name (uid N)` (the name from `/etc/passwd`, when it has one), for
/// error messages about permissions.
pub fn user() -> String {
    // SAFETY: geteuid takes nothing and cannot fail.
    let uid = unsafe { libc::geteuid() };
    // /etc/passwd read by hand: one line per user, `name:x:uid:...`; no crate for one lookup.
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid.to_string()).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}
