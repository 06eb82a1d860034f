//! A size-limited tmpfs, for tests of a journal whose disk fills up or turns
//! read-only (mounting needs root; CI runs as root). Unmounted on drop.

#![allow(dead_code)] // each test binary uses its own part of the support code

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`6m`, `64m`) on `dir`.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs(dir.to_path_buf())
    }

    /// Remounts with `options`. A remount read-only fails (EBUSY) while any file
    /// on the volume is open for writing, and sled's background threads close the
    /// store's files a moment after the journal is dropped: first wait for this
    /// process to hold no file there (what the kernel checks), not for a time.
    pub fn remount(&self, options: &str) {
        let open_here = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .filter(|target| target.starts_with(&self.0))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while options.split(',').any(|o| o == "ro") && open_here() > 0 {
            assert!(
                Instant::now() < deadline,
                "files on the volume still open 10 s after the journal was dropped"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
