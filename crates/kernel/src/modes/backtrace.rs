//! `mode=backtrace`: the NMI backtrace of every CPU (`entry::backtrace`),
//! as Linux's `echo l > /proc/sysrq-trigger` prints it.

use crate::debug::result;
use crate::entry::backtrace;

/// Asks every online CPU for its backtrace; passes when each answered.
pub fn run() -> bool {
    let answers = backtrace::trigger_all_cpu_backtrace();
    let ok = answers.answered == answers.asked;
    println!("extregs: backtrace: {} of {} CPUs answered", answers.answered, answers.asked);
    result::emit(
        ok,
        format_args!(",\"asked\":{},\"answered\":{}", answers.asked, answers.answered),
    );
    ok
}
