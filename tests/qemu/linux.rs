//! The Linux personality (`extregs exec`): static Linux programs of our
//! own (`tests/linux/*.c`, built here with musl-gcc and gcc -static) run
//! on the kernel, checking Linux's signal and memory ABI from user mode,
//! and the runner's errors and exit statuses. (Linux's own selftests run
//! in `make linux-selftests`.)

use extregs::exit_codes::EXIT_USAGE;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where this test process builds the probes.
fn build_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("extregs-linux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a build directory");
        dir
    })
}

/// Builds `tests/linux/NAME.c` with `compiler` (musl-gcc or gcc),
/// statically, once per test process; the program's path.
fn probe(name: &str, compiler: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let output = build_dir().join(format!("{name}-{compiler}"));
    let mut built = BUILT.lock().unwrap();
    if built.contains(&output) {
        return output;
    }
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux").join(format!("{name}.c"));
    let status = Command::new(compiler)
        .args(["-static", "-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&output)
        .arg(&source)
        .status()
        .unwrap_or_else(|error| {
            panic!("{compiler} (make linux-deps installs musl-tools): {error}")
        });
    assert!(status.success(), "{compiler} {}", source.display());
    built.push(output.clone());
    output
}

/// `extregs exec [flags] PATH [args]`: (status, stdout, stderr).
fn exec(flags: &[&str], program: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_extregs"));
    command.arg("exec").args(flags).arg(program).args(args);
    let output = command.output().expect("run extregs exec");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The RESULT line's JSON in `stdout`.
fn result_of(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find_map(|line| line.strip_prefix("RESULT ")).expect("a RESULT line");
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn number(result: &serde_json::Value, key: &str) -> u64 {
    result[key].as_u64().unwrap_or_else(|| panic!("RESULT has {key}: {result}"))
}

#[test]
fn the_signal_abi_holds_for_musl_and_glibc_programs() {
    for compiler in ["musl-gcc", "gcc"] {
        let program = probe("probe_signals", compiler);
        let (status, stdout, stderr) = exec(&[], &program, &[]);
        assert_eq!(status, 0, "{compiler}: {stdout}\n{stderr}");
        assert!(stdout.contains("probe_signals: 0 failures"), "{compiler}: {stdout}");
        let result = result_of(&stdout);
        assert_eq!(result["exit_status"], 0, "{result}");
        assert_eq!(number(&result, "frame_errors"), 0, "{result}");
        // raise x5, ud2, two #PFs, int3, tkill, nested x2, onstack, unblock.
        assert!(number(&result, "signals_delivered") >= 10, "{result}");
        assert_eq!(
            number(&result, "sigreturns"),
            number(&result, "signals_delivered"),
            "every handler returned through rt_sigreturn: {result}"
        );
    }
}

/// With two CPUs the process runs on the AP (CPU 0 keeps init): the
/// signal ABI, the FPU and the memory calls hold there, every entry of the
/// process taken through the AP's own entry state.
#[test]
fn a_process_runs_on_an_ap_with_two_cpus() {
    for name in ["probe_signals", "probe_mm"] {
        let program = probe(name, "musl-gcc");
        let (status, stdout, stderr) = exec(&["--smp", "2"], &program, &[]);
        assert_eq!(status, 0, "{name}: {stdout}\n{stderr}");
        assert!(stdout.contains(&format!("{name}: 0 failures")), "{name}: {stdout}");
        let result = result_of(&stdout);
        assert_eq!(result["cpus"], 2, "{result}");
        assert_eq!(result["process_cpus"], serde_json::json!([1]), "{result}");
        assert_eq!(number(&result, "frame_errors"), 0, "{result}");
    }
    // A CPU count the machine can't have is refused with one line.
    let program = probe("probe_signals", "musl-gcc");
    let (status, _, stderr) = exec(&["--smp", "9"], &program, &[]);
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("--smp must be from 1 to 8"), "{stderr}");
}

#[test]
fn the_memory_calls_follow_linux() {
    for compiler in ["musl-gcc", "gcc"] {
        let program = probe("probe_mm", compiler);
        let (status, stdout, stderr) = exec(&["--quiet"], &program, &[]);
        assert_eq!(status, 0, "{compiler}: {stdout}\n{stderr}");
        assert!(stdout.contains("probe_mm: 0 failures"), "{compiler}: {stdout}");
    }
}

#[test]
fn signals_and_frames_hold_under_an_nmi_storm() {
    let program = probe("probe_signals", "musl-gcc");
    let (status, stdout, stderr) = exec(&["--nmi-storm"], &program, &[]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    let result = result_of(&stdout);
    assert_eq!(number(&result, "frame_errors"), 0, "{result}");
    assert!(number(&result, "user_frames_checked") > 0, "{result}");
    assert!(stderr.contains("NMI storm: "), "the storm ran: {stderr}");
}

#[test]
fn exec_exits_as_a_shell_would() {
    let program = probe("probe_crash", "musl-gcc");
    let (status, stdout, _) = exec(&["--quiet"], &program, &["args", "two words", "-x"]);
    assert_eq!(status, 0, "{stdout}");
    let expected =
        format!("argv[0]={}\nargv[1]=args\nargv[2]=two words\nargv[3]=-x\n", program.display());
    assert!(stdout.contains(&expected), "{stdout}");
    let (status, _, _) = exec(&["--quiet"], &program, &["exit", "42"]);
    assert_eq!(status, 42);
    let (status, stdout, _) = exec(&["--quiet"], &program, &["segv"]);
    assert_eq!(status, 128 + 11, "killed by SIGSEGV: {stdout}");
    let line = stdout
        .lines()
        .find(|line| line.contains("segfault at 1000"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with("probe_crash-musl[")
            && line.contains(" error 6 in probe_crash-musl[401000+"),
        "Linux's show_signal_msg line: {line}"
    );
    let (status, stdout, _) = exec(&["--quiet"], &program, &["ud2"]);
    assert_eq!(status, 128 + 4, "killed by SIGILL: {stdout}");
    assert!(stdout.contains("trap invalid opcode ip:"), "{stdout}");
}

#[test]
fn a_static_pie_program_is_moved_and_runs() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux/probe_crash.c");
    let program = build_dir().join("probe_crash-pie");
    let built =
        Command::new("gcc").args(["-static-pie", "-O1", "-o"]).arg(&program).arg(&source).status();
    assert!(built.is_ok_and(|status| status.success()), "gcc -static-pie");
    let (status, stdout, stderr) = exec(&["--quiet"], &program, &["exit", "7"]);
    assert_eq!(status, 7, "{stdout}\n{stderr}");
}

#[test]
fn exec_refuses_what_it_cannot_run_with_one_line() {
    let dir = build_dir();
    let not_elf = dir.join("not-elf.sh");
    std::fs::write(&not_elf, "#!/bin/sh\necho hi\n").unwrap();
    let mut arm = std::fs::read(probe("probe_crash", "musl-gcc")).unwrap();
    arm[18] = 183; // EM_AARCH64
    let arm_path = dir.join("arm.elf");
    std::fs::write(&arm_path, &arm).unwrap();
    let dynamic = dir.join("dynamic");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux/probe_crash.c");
    assert!(Command::new("gcc").arg("-o").arg(&dynamic).arg(&source).status().unwrap().success());
    for (path, reason) in [
        (dir.join("no-such-program"), "No such file or directory"),
        (not_elf, "not an ELF file"),
        (arm_path, "not an x86-64 ELF64 little-endian file"),
        (dynamic, "dynamically linked"),
    ] {
        let (status, stdout, stderr) = exec(&[], &path, &[]);
        assert_eq!(status, EXIT_USAGE, "{}: {stderr}", path.display());
        assert!(stdout.is_empty(), "nothing booted for {}: {stdout}", path.display());
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].starts_with("extregs: exec: ") && lines[0].contains(reason), "{stderr}");
    }
}

#[test]
fn ring3_fuzz_levels_end_in_signals_and_come_back() {
    let outcome = crate::common::boot(
        extregs::qemu::Firmware::Bios,
        "max",
        "mode=fuzz seeds=0..12 iterations=50",
    );
    crate::common::assert_verdict(&outcome, 0);
    let result = outcome.result().expect("a RESULT line");
    assert_eq!(result["violations"], 0, "{result}");
    assert!(
        result["user_signals"].as_u64().unwrap_or(0) > 0,
        "some ring-3 levels ended in a signal and its rt_sigreturn: {result}"
    );
}

#[test]
fn bench_peer_runs_the_program_under_both_kernels() {
    let json = build_dir().join("peer.json");
    let output = Command::new(env!("CARGO_BIN_EXE_extregs"))
        .args(["bench", "--peer", "--runs", "1", "--json"])
        .arg(&json)
        .output()
        .expect("run extregs bench --peer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("extregs/Linux"), "{stdout}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let loops = document["peer"]["loops"].as_array().expect("the loops");
    assert_eq!(loops.len(), 2, "{document}");
    for row in loops {
        for key in ["extregs_ticks", "linux_ticks", "ratio"] {
            assert!(row[key].as_f64().is_some_and(|value| value > 0.0), "{key}: {row}");
        }
    }
    assert!(document["peer"]["linux_kernel"].as_str().unwrap().starts_with("vmlinuz-6.1"));
}
