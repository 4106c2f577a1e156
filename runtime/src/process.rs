//! Whether a process still runs. Signal 0 also finds a zombie (a killed process whose
//! parent has not reaped it yet: init does, under some supervisors seconds later) and a
//! process already dying of SIGKILL; neither will act again.

/// Whether `pid` is a process that exists (ours or another user's) and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = state.as_deref().and_then(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
    });
    exists && !matches!(state, Some("Z" | "X"))
}

/// When `pid` started, to the second at worst early (/proc/PID/stat's start time in clock
/// ticks after /proc/stat's `btime`); None when it cannot be read. A process that started
/// after something was made is not the one that made it: its PID was reused.
pub fn start_time(pid: i32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is the 3rd, starttime the 22nd.
    let (_, rest) = stat.rsplit_once(')')?;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let seconds = boot + ticks / per_second.max(1);
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// Whether `pid` has SIGKILL pending (/proc/PID/status `SigPnd` or `ShdPnd`): it is
/// exiting and will not act again, though it may still hold its files and ports.
pub fn is_dying(pid: i32) -> bool {
    let kill = 1u64 << (libc::SIGKILL - 1);
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("SigPnd:")
                    .or_else(|| l.strip_prefix("ShdPnd:"))
            })
            .any(|mask| u64::from_str_radix(mask.trim(), 16).is_ok_and(|bits| bits & kill != 0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_running_and_a_live_child_is() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(is_running(pid));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Not reaped yet: a zombie, which signal 0 still finds.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0);
        assert!(!is_running(pid));
        child.wait().unwrap();
        assert!(!is_running(pid));
        assert!(is_running(std::process::id() as i32));
    }
}
