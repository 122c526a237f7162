//! `mode=exec`: run one static Linux x86-64 program (`extregs exec PATH
//! [ARG...]`), as a Linux process on the extended frame.
//!
//! The runner passes the file as fw_cfg `opt/extregs/program` and the
//! arguments, NUL-separated, as `opt/extregs/argv`; the image is not
//! rebuilt. With the scheduler tick running, init spawns the process
//! (`linux::exec`), waits for it, and reports its exit status (the exit
//! code, or 128 + the signal that killed it) with the signal and frame
//! counts. The mode is ok when the program could run and no frame failed
//! the entry checks: the program's own verdict is its exit status, which
//! the runner passes on.

use crate::arch::fwcfg;
use crate::arch::uaccess::TASK_SIZE_MAX;
use crate::debug::result;
use crate::linux::{counters, exec};
use crate::sched;
use core::sync::atomic::Ordering;

/// The largest program accepted (a glibc static binary is about 1 MB).
const PROGRAM_MAX: usize = 64 << 20;
/// Linux's shell status for a program that could not be executed.
const EXIT_CANNOT_EXECUTE: i32 = 127;

fn refuse(why: core::fmt::Arguments<'_>) -> bool {
    println!("extregs: exec: {why}");
    result::emit(false, format_args!(",\"exit_status\":{EXIT_CANNOT_EXECUTE}"));
    false
}

/// Runs the program and reports.
pub fn run() -> bool {
    let file = match fwcfg::read_file(fwcfg::PROGRAM_FILE, PROGRAM_MAX) {
        Ok(file) => file,
        Err(why) => return refuse(format_args!("{why}")),
    };
    let mut argv = [0u8; exec::ARGV_MAX];
    let argv_len = match fwcfg::read_file(fwcfg::ARGV_FILE, exec::ARGV_MAX) {
        Ok(bytes) => {
            argv[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        }
        Err(fwcfg::FileReadError::Missing(_)) => {
            argv[..4].copy_from_slice(b"prog");
            4
        }
        Err(why) => return refuse(format_args!("{why}")),
    };
    let plan = match extregs_elf::plan(file, TASK_SIZE_MAX) {
        Ok(plan) => plan,
        Err(why) => return refuse(format_args!("{why}")),
    };
    let argv0 = argv[..argv_len].split(|&byte| byte == 0).next().unwrap_or(b"prog");
    let base = argv0.rsplit(|&byte| byte == b'/').next().unwrap_or(argv0);
    let name =
        sched::task::format_name(format_args!("{}", core::str::from_utf8(base).unwrap_or("prog")));
    let program = exec::set_program(exec::Program { file, plan, argv, argv_len, name });
    println!(
        "extregs: exec: {} ({} bytes, {} segments, entry {:#x})",
        program.name.as_str(),
        file.len(),
        plan.segment_count,
        plan.entry
    );
    let user_before = crate::user::counts();
    sched::start_tick();
    let (status, pid, ran_on) = match exec::run_program() {
        Ok(ended) => ended,
        Err(why) => {
            sched::stop_tick();
            return refuse(format_args!("no task for the program: {why:?}"));
        }
    };
    sched::stop_tick();
    let mut ran_on_cpus = [0u64; extregs_regs::NR_CPUS];
    let mut ran_on_count = 0;
    for cpu in (0..extregs_regs::NR_CPUS).filter(|&cpu| ran_on & (1 << cpu) != 0) {
        ran_on_cpus[ran_on_count] = cpu as u64;
        ran_on_count += 1;
    }
    let user = crate::user::counts();
    let signals = counters::SIGNALS_DELIVERED.load(Ordering::Relaxed);
    let sigreturns = counters::SIGRETURNS.load(Ordering::Relaxed);
    let syscalls = counters::SYSCALLS.load(Ordering::Relaxed);
    let enosys = counters::ENOSYS_RETURNS.load(Ordering::Relaxed);
    println!(
        "extregs: exec: {}[{}] ended with status {status}: {syscalls} syscalls ({enosys} -ENOSYS), {signals} signals delivered, {sigreturns} sigreturns",
        program.name.as_str(),
        pid
    );
    result::emit(
        true,
        format_args!(
            ",\"exit_status\":{status},\"signals_delivered\":{signals},\"sigreturns\":{sigreturns},\"syscalls\":{syscalls},\"enosys\":{enosys},\"user_frames_checked\":{},\"user_nmis\":{},\"bad_irets\":{},\"process_cpus\":{}",
            user.user_frames_checked - user_before.user_frames_checked,
            user.user_nmis - user_before.user_nmis,
            user.bad_irets - user_before.bad_irets,
            result::JsonList(&ran_on_cpus[..ran_on_count])
        ),
    );
    true
}
