//! Children that end with the proxy, however it ends.
//!
//! A server child runs in a process group of its own (so that the proxy's shutdown reaches wrappers such
//! as `npx` and what they start), so a signal to the proxy's group never reaches it. The proxy shuts its
//! children down itself when it stops — close stdin, SIGTERM, SIGKILL — but killed with SIGKILL (or by the
//! OOM killer) it can do nothing: a child that does not stop at the end of its stdin would go on serving
//! nobody. Linux's parent-death signal closes that gap: the kernel sends the child SIGTERM when the thread
//! that started it ends (the proxy's runtime threads live as long as the proxy).

use std::os::unix::process::CommandExt;

/// Asks, in the child between fork and exec, for SIGTERM when the proxy ends (`PR_SET_PDEATHSIG`); a child
/// whose proxy ended before the request took effect exits at once.
pub(super) fn end_with_the_proxy(command: &mut std::process::Command) {
    let proxy = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl(2), getppid(2) and
    // _exit(2), which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The proxy may have ended between fork and prctl: then nobody would send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(proxy) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
