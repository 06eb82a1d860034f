//! The journal against real damage and real disks: sled's files damaged four
//! ways, a filesystem that fills up, one that is read-only. Journal-level (no
//! control plane); the end-to-end versions with an intake are in
//! `e2e_disk.rs`.
//!
//! The promise checked: an open never crash-loops and never silently comes back
//! with less than was acknowledged. Either every acknowledged record is there, or
//! the journal was set aside (kept, readable) and a fresh one says so with a gap.
//!
//! The filesystem tests mount a size-limited tmpfs and need root (CI has it);
//! without it they fail rather than pass unrun.

#[path = "support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

use std::path::Path;
use std::process::Command;

use evrelay::journal::{Journal, JournalSettings, Recovery, open_or_recover};
use evrelay::record::{Header, Record, RecordKind, ResumeToken};

const RECORDS: usize = 3000;
const SHIPPED: u64 = 2000;

fn record(i: usize) -> Record {
    let mut header = Header::blank(RecordKind::Event, 1_700_000_000_000 + i as i64);
    header.uid = format!("uid-{i}");
    header.resource_version = (1000 + i).to_string();
    Record {
        header,
        raw: format!(
            r#"{{"metadata":{{"uid":"uid-{i}"}},"message":"{}"}}"#,
            "m".repeat(1000)
        )
        .into_bytes(),
    }
}

fn token(i: usize) -> ResumeToken {
    ResumeToken {
        resource_version: (1000 + i).to_string(),
        timestamp_ms: 1_700_000_000_000 + i as i64,
    }
}

fn settings(dir: &Path) -> JournalSettings {
    JournalSettings {
        data_dir: dir.to_path_buf(),
        cache_capacity_bytes: 4 << 20,
        max_bytes: 1 << 30,
        ..JournalSettings::default()
    }
}

/// A journal of [`RECORDS`] records in batches of 50, [`SHIPPED`] of them shipped,
/// closed cleanly, and opened once more (sled writes its snapshot file at an
/// open).
fn written(dir: &Path) {
    let j = Journal::open(&settings(dir)).unwrap();
    for start in (0..RECORDS).step_by(50) {
        let batch: Vec<_> = (start..start + 50).map(record).collect();
        j.append(&batch, Some(&token(start + 49))).unwrap();
    }
    j.mark_shipped("datadog", SHIPPED, &[]).unwrap();
    j.checkpoint().unwrap();
    drop(j);
    drop(Journal::open(&settings(dir)).unwrap());
}

/// What an open after the damage gave: the journal, and the recovery if any.
/// A journal that opens without a recovery must hold everything acknowledged;
/// one whose reads then meet damage is set aside at the next open.
fn reopen_after_damage(dir: &Path) -> (Journal, Option<Recovery>) {
    let s = settings(dir);
    let (j, recovery) = open_or_recover(&s).expect("a damaged journal never fails the open");
    if recovery.is_some() {
        return (j, recovery);
    }
    let mut read = 0;
    let mut damaged = None;
    for r in j.iter() {
        match r {
            Ok(stored) if stored.record.is_ok() => read += 1,
            Ok(stored) => {
                damaged = Some(format!("record {}: {:?}", stored.seq, stored.record));
                break;
            }
            Err(e) => {
                damaged = Some(e.to_string());
                break;
            }
        }
    }
    match damaged {
        None => {
            assert_eq!(read, RECORDS, "opened without a word, but short");
            assert_eq!(j.shipped_through("datadog").unwrap(), SHIPPED);
            assert_eq!(j.resume_token().unwrap(), Some(token(RECORDS - 1)));
            (j, None)
        }
        Some(why) => {
            eprintln!("reads met damage ({why}); the next open sets the journal aside");
            drop(j);
            let (j, recovery) = open_or_recover(&s).expect("the second open recovers");
            assert!(
                recovery.is_some(),
                "damage seen while running is not trusted again"
            );
            (j, recovery)
        }
    }
}

/// Checks a recovery: the fresh journal has the gap and resumes from the last
/// shipped-through token recorded; the damaged copy is kept and `dump` opens it.
fn check_recovery(dir: &Path, j: &Journal, r: &Recovery) {
    eprintln!("set aside: {} ({})", r.moved_to.display(), r.reason);
    assert!(r.moved_to.starts_with(dir) && r.moved_to.join("journal").exists());
    let records: Vec<_> = j.iter().map(|r| r.unwrap().record.unwrap()).collect();
    assert_eq!(records.len(), 1, "a fresh journal with its gap marker");
    assert_eq!(records[0].header.reason, "JournalDamaged");
    let resumed = j.resume_token().unwrap().expect("resumes from a token");
    assert_eq!(
        resumed.resource_version,
        token(SHIPPED as usize - 1).resource_version,
        "the shipped-through token the state file recorded"
    );
    // The damaged copy is readable as a data dir (or says why not), and a second
    // open moves nothing.
    let dump = Command::new(env!("CARGO_BIN_EXE_evrelay"))
        .args(["dump", "--meta", "--data-dir"])
        .arg(&r.moved_to)
        .output()
        .unwrap();
    eprintln!(
        "dump --meta of the damaged copy: {} {}",
        String::from_utf8_lossy(&dump.stdout)
            .chars()
            .take(400)
            .collect::<String>(),
        String::from_utf8_lossy(&dump.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
}

fn damage_and_recover(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    damage(&dir.path().join("journal"));
    let (j, recovery) = reopen_after_damage(dir.path());
    if let Some(r) = &recovery {
        check_recovery(dir.path(), &j, r);
    }
    // Either way the journal takes writes, and the next start moves nothing.
    j.append(&[record(RECORDS + 1)], Some(&token(RECORDS + 1)))
        .unwrap();
    j.checkpoint().unwrap();
    drop(j);
    let (_, again) = open_or_recover(&settings(dir.path())).unwrap();
    match (&recovery, &again) {
        (_, None) => {}
        // Damage sled did not notice at the first open can still cost it the
        // write after it (seen once in some 30 runs, bytes flipped at a segment
        // boundary): the state file catches that rollback at the next start,
        // which is what it is for.
        (None, Some(r)) if r.reason.contains("state file") => {
            eprintln!("undetected damage rolled back the next write; caught: {r:?}")
        }
        (_, Some(r)) => panic!("a second start moved the journal again: {r:?}"),
    }
}

fn overwrite(file: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    assert!(
        f.metadata().unwrap().len() > offset + len as u64,
        "{} too small",
        file.display()
    );
    f.write_all_at(&vec![0xA5; len], offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn bytes_flipped_mid_file() {
    damage_and_recover(|store| overwrite(&store.join("db"), 200_000, 16));
}

#[test]
fn bytes_flipped_at_a_segment_boundary() {
    // sled's segments are 512 KiB: the damage straddles the first boundary.
    damage_and_recover(|store| overwrite(&store.join("db"), 512 * 1024 - 8, 16));
}

#[test]
fn log_truncated_to_half() {
    damage_and_recover(|store| {
        let db = store.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(len / 2).unwrap();
        f.sync_all().unwrap();
    });
}

#[test]
fn snapshot_damaged() {
    damage_and_recover(|store| {
        let snap = std::fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
            .expect("a snapshot file");
        overwrite(&snap, 8, 8);
    });
}

#[test]
fn a_deleted_store_is_noticed() {
    damage_and_recover(|store| std::fs::remove_dir_all(store).unwrap());
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_acknowledged_and_recovers_without_a_restart() {
    let fs = Tmpfs::mount(&tempfile::tempdir().unwrap().keep(), "6m");
    let s = settings(&fs.0);
    let (j, _) = open_or_recover(&s).unwrap();
    let mut acknowledged = 0;
    let mut failures = 0;
    let mut first_error = None;
    while failures < 3 {
        let batch: Vec<_> = (acknowledged..acknowledged + 10).map(record).collect();
        match j.append(&batch, Some(&token(acknowledged + 9))) {
            Ok(_) => acknowledged += 10,
            Err(e) => {
                assert!(e.is_unwritable() && !e.is_damage(), "{e}");
                first_error.get_or_insert(e.to_string());
                failures += 1;
            }
        }
    }
    let first_error = first_error.unwrap();
    assert!(first_error.contains("No space left"), "{first_error}");
    assert_eq!(
        j.write_failure().as_deref(),
        Some(first_error.as_str()),
        "the first error is the one reported"
    );
    eprintln!("disk full after {acknowledged} records: {first_error}");

    fs.remount("size=64m");
    let batch: Vec<_> = (acknowledged..acknowledged + 10).map(record).collect();
    j.append(&batch, Some(&token(acknowledged + 9)))
        .expect("writes again once there is room, without a restart");
    acknowledged += 10;
    assert_eq!(j.write_failure(), None);
    let read = j
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.record.is_ok()))
        .count();
    assert_eq!(read, acknowledged, "every acknowledged record is there");
    drop(j);
    let (j, recovery) = open_or_recover(&s).unwrap();
    assert!(recovery.is_none(), "a full disk is not damage");
    assert_eq!(j.iter().count(), acknowledged);
    assert_eq!(j.resume_token().unwrap(), Some(token(acknowledged - 1)));
}

#[test]
fn a_read_only_disk_is_reported_and_never_moves_the_journal_aside() {
    let fs = Tmpfs::mount(&tempfile::tempdir().unwrap().keep(), "64m");
    let s = settings(&fs.0);
    {
        let (j, _) = open_or_recover(&s).unwrap();
        j.append(&[record(0), record(1)], Some(&token(1))).unwrap();
        j.checkpoint().unwrap();
    }
    fs.remount("ro");
    let err = open_or_recover(&s)
        .err()
        .expect("a read-only disk cannot be opened for writing");
    assert!(err.is_unwritable() && !err.is_damage(), "{err}");
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::ReadOnlyFilesystem),
        "{err}"
    );
    fs.remount("rw");
    let (j, recovery) = open_or_recover(&s).unwrap();
    assert!(recovery.is_none());
    assert_eq!(j.iter().count(), 2);
    assert!(
        !std::fs::read_dir(&fs.0).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("damaged-")),
        "nothing was set aside"
    );
}

#[test]
fn compaction_brings_the_store_back_to_what_it_holds_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = JournalSettings {
        max_bytes: 2 << 20,
        ..settings(dir.path())
    };
    let j = Journal::open(&s).unwrap();
    // 20 MiB through a 2 MiB cap, shipped as it goes, a tenth left pending.
    let mut i = 0;
    while i < 20_000 {
        let batch: Vec<_> = (i..i + 100).map(record).collect();
        let out = j.append(&batch, Some(&token(i + 99))).unwrap();
        if i < 18_000 {
            j.mark_shipped("datadog", out.head, &[]).unwrap();
        }
        i += 100;
    }
    let records: Vec<_> = j.iter().map(|r| r.unwrap().seq).collect();
    let (token_before, shipped_before) = (
        j.resume_token().unwrap(),
        j.shipped_through("datadog").unwrap(),
    );
    let shipped_token = j.shipped_token(&["datadog"]).unwrap();
    let compaction = j
        .compact_if_large()
        .unwrap()
        .expect("past 3x the cap on disk");
    eprintln!("figures: compaction {compaction:?}");
    assert!(
        compaction.after_bytes * 2 < compaction.before_bytes,
        "{compaction:?}"
    );
    assert_eq!(
        j.iter().map(|r| r.unwrap().seq).collect::<Vec<_>>(),
        records
    );
    assert_eq!(j.resume_token().unwrap(), token_before);
    assert_eq!(j.shipped_through("datadog").unwrap(), shipped_before);
    assert_eq!(j.shipped_token(&["datadog"]).unwrap(), shipped_token);
    // Writes go on, into the compacted store, and survive a restart.
    let out = j.append(&[record(i)], Some(&token(i))).unwrap();
    assert!(
        j.append(&[record(i)], None).unwrap().duplicates == 1,
        "the dedup index came along"
    );
    j.checkpoint().unwrap();
    drop(j);
    let (j, recovery) = open_or_recover(&s).unwrap();
    assert!(recovery.is_none());
    assert_eq!(j.head(), out.head);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !entries
            .iter()
            .any(|n| n.to_string_lossy().starts_with("journal.") && n != "journal.state"),
        "{entries:?}"
    );
}

#[test]
fn a_compaction_interrupted_before_its_swap_goes_back_to_the_journal_it_started_from() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    {
        let j = Journal::open(&s).unwrap();
        j.append(&[record(1), record(2)], Some(&token(2))).unwrap();
        j.checkpoint().unwrap();
    }
    // The crash left: the old journal renamed, a half-written copy.
    std::fs::rename(dir.path().join("journal"), dir.path().join("journal.old")).unwrap();
    std::fs::create_dir(dir.path().join("journal.compacting")).unwrap();
    let (j, recovery) = open_or_recover(&s).unwrap();
    assert!(recovery.is_none(), "{recovery:?}");
    assert_eq!(j.iter().count(), 2);
    assert!(
        !dir.path().join("journal.old").exists() && !dir.path().join("journal.compacting").exists()
    );
}

/// The journal's real footprint at its cap: records churned through a journal
/// capped at `max_bytes`, shipped as they go (the cap then evicts shipped
/// records), with sled's bytes on disk sampled. What sizes the volume.
///
/// `cargo test --release --test journal_disk disk_footprint -- --ignored --nocapture`
#[test]
#[ignore = "a soak: run on demand (BENCHMARKS.md)"]
fn disk_footprint_at_the_cap() {
    let max_mib: u64 = std::env::var("SOAK_CAP_MIB").map_or(64, |v| v.parse().unwrap());
    let over: u64 = std::env::var("SOAK_TIMES").map_or(5, |v| v.parse().unwrap());
    let max_bytes: u64 = max_mib << 20;
    for (label, size) in [("1 KiB records", 1000usize), ("8 KiB records", 8000)] {
        let dir = tempfile::tempdir().unwrap();
        let s = JournalSettings {
            max_bytes,
            ..settings(dir.path())
        };
        let j = Journal::open(&s).unwrap();
        let total = (max_bytes * over) as usize / size;
        let mut peak = 0u64;
        let mut compactions = 0;
        let compacting = std::env::var("SOAK_NO_COMPACTION").is_err();
        let mut samples = Vec::new();
        let mut i = 0;
        let started = std::time::Instant::now();
        while i < total {
            let batch: Vec<_> = (i..i + 100)
                .map(|n| {
                    let mut r = record(n);
                    r.raw = vec![b'm'; size];
                    if std::env::var("SOAK_NO_UID").is_ok() {
                        r.header.uid.clear();
                    }
                    r
                })
                .collect();
            let out = j.append(&batch, Some(&token(i + 99))).unwrap();
            j.mark_shipped("datadog", out.head, &[]).unwrap();
            i += 100;
            // As housekeeping does every minute (here: every 5 MiB written).
            if compacting
                && i % ((5 << 20) / size) < 100
                && let Some(c) = j.compact_if_large().unwrap()
            {
                compactions += 1;
                peak = peak.max(c.before_bytes);
            }
            if i % (total / 20).max(100) < 100 {
                let disk = j.size_on_disk().unwrap();
                peak = peak.max(disk);
                samples.push(disk as f64 / max_bytes as f64);
            }
        }
        let records = j.counters().unwrap().record_bytes;
        let end = j.size_on_disk().unwrap();
        peak = peak.max(end);
        eprintln!(
            "figures: {label}: {compactions} compactions; {:.0} MiB written through a {} MiB cap in {:.1}s; record bytes at the end {:.1} MiB; on disk: peak {:.1} MiB ({:.2}x the cap), end {:.1} MiB; samples (x cap): {:?}",
            (total * size) as f64 / 1048576.0,
            max_bytes >> 20,
            started.elapsed().as_secs_f64(),
            records as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            peak as f64 / max_bytes as f64,
            end as f64 / 1048576.0,
            samples
                .iter()
                .map(|x| (x * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        drop(j);
        let reopened = Journal::open(&s).unwrap();
        eprintln!(
            "figures: {label}: after a restart on disk {:.1} MiB",
            reopened.size_on_disk().unwrap() as f64 / 1048576.0
        );
    }
}
