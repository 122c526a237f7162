//! The single `RESULT {json}` line every mode ends with (DESIGN §4).

use crate::{pks, println, traps};
use core::sync::atomic::{AtomicU8, Ordering};
use extregs_cmdline::Mode;

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

/// Prints `RESULT {"mode":…,"ok":…,"pks":…,"frames_checked":…,
/// "frame_errors":…<extra>}`. `extra` is either empty or starts with a
/// comma and continues the JSON object.
///
/// Every mode reports the entry checks (`traps::check_frame`) of the whole
/// run, and no mode is ok when a frame failed them, whatever it checked
/// itself.
pub fn emit(ok: bool, extra: core::fmt::Arguments<'_>) {
    let (frames_checked, frame_errors) = traps::frame_counts();
    println!(
        "RESULT {{\"mode\":\"{}\",\"ok\":{},\"pks\":{},\"frames_checked\":{},\"frame_errors\":{}{}}}",
        mode_name(),
        ok && frame_errors == 0,
        pks::enabled(),
        frames_checked,
        frame_errors,
        extra
    );
}
