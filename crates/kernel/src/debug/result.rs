//! The single `RESULT {json}` line every mode ends with (the contract is
//! in `docs/design.md`), and the tally of entry-frame checks it reports.
//!
//! The frame checker (`entry::check`) counts every frame it looks at
//! here, so that every RESULT, whichever mode or oops writes it, carries
//! the checks of the whole run.

use crate::arch::{pks, smp};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use extregs_cmdline::Mode;

/// Frames the entry's frame checker looked at, and how many were wrong.
static FRAMES_CHECKED: AtomicU64 = AtomicU64::new(0);
static FRAME_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts one frame the checker looked at.
pub fn count_frame_checked() {
    FRAMES_CHECKED.fetch_add(1, Ordering::Relaxed);
}

/// Counts one frame that failed a check; returns how many had failed
/// before it (the checker reports only the first). Tells the observer, if
/// one is installed, in the context that took the frame.
pub fn count_frame_error() -> u64 {
    if let Some(observe) = FRAME_ERROR_OBSERVER.get() {
        observe();
    }
    FRAME_ERRORS.fetch_add(1, Ordering::Relaxed)
}

/// Called for every frame that fails a check, in the context (the task,
/// on its CPU) whose entry took it: the fuzzer charges it to that task's
/// lane, so on N CPUs the seed that took the frame is the one named.
static FRAME_ERROR_OBSERVER: crate::arch::hook_slot::HookSlot<fn()> =
    crate::arch::hook_slot::HookSlot::empty();

/// Installs (`Some`) or removes the frame-error observer.
pub fn observe_frame_errors(observer: Option<fn()>) {
    FRAME_ERROR_OBSERVER.set_or_clear(observer);
}

/// (frames checked, frames that failed a check) since boot.
pub fn frame_counts() -> (u64, u64) {
    (FRAMES_CHECKED.load(Ordering::Relaxed), FRAME_ERRORS.load(Ordering::Relaxed))
}

/// The mode running now, for results written from the oops path.
static CURRENT_MODE: AtomicU8 = AtomicU8::new(NO_MODE);
const NO_MODE: u8 = u8::MAX;

/// Records the mode the kernel is running.
pub fn set_mode(mode: Mode) {
    let index = Mode::ALL.iter().position(|(m, _)| *m == mode).expect("every mode is listed");
    CURRENT_MODE.store(index as u8, Ordering::Relaxed);
}

fn mode_name() -> &'static str {
    let index = usize::from(CURRENT_MODE.load(Ordering::Relaxed));
    Mode::ALL.get(index).map(|(_, name)| *name).unwrap_or("boot")
}

/// Prints `RESULT {"mode":…,"ok":…,"pks":…,"cpus":…,"frames_checked":…,
/// "frame_errors":…<extra>}`. `extra` is either empty or starts with a
/// comma and continues the JSON object.
///
/// Every mode reports the entry checks (`entry::check::check_frame`) of the whole
/// run, and no mode is ok when a frame failed them, whatever it checked
/// itself.
pub fn emit(ok: bool, extra: core::fmt::Arguments<'_>) {
    let (frames_checked, frame_errors) = frame_counts();
    println!(
        "RESULT {{\"mode\":\"{}\",\"ok\":{},\"pks\":{},\"cpus\":{},\"frames_checked\":{},\"frame_errors\":{}{}}}",
        mode_name(),
        ok && frame_errors == 0,
        pks::enabled(),
        smp::cpus_online(),
        frames_checked,
        frame_errors,
        extra
    );
}

/// `[a,b,c]`: numbers as a JSON list, for RESULT fields.
pub struct JsonList<'a>(pub &'a [u64]);

impl core::fmt::Display for JsonList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[")?;
        for (index, value) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{value}")?;
        }
        f.write_str("]")
    }
}
