//! The single `RESULT {json}` line every mode ends with (DESIGN §4).

use crate::{pks, println};
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

/// Prints `RESULT {"mode":…,"ok":…,"pks":…<extra>}`. `extra` is either
/// empty or starts with a comma and continues the JSON object.
pub fn emit(ok: bool, extra: core::fmt::Arguments<'_>) {
    println!(
        "RESULT {{\"mode\":\"{}\",\"ok\":{},\"pks\":{}{}}}",
        mode_name(),
        ok,
        pks::enabled(),
        extra
    );
}
