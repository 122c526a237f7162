//! Reading a finished boot: the exit status, the `RESULT {json}` line, KTAP
//! results and show_regs dumps in the serial log.

use crate::error::{Error, Result};
use crate::exit_codes::{
    EXIT_INTERRUPTED, EXIT_KERNEL_FAILURE, EXIT_SUCCESS, EXIT_TIMEOUT, EXIT_USAGE,
    QEMU_EXIT_FAILURE, QEMU_EXIT_SUCCESS,
};

/// How QEMU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// QEMU exited; `None` when a signal ended it.
    Exited(Option<i32>),
    /// Still running at the timeout, and killed.
    TimedOut,
    /// Still running when its owner cancelled it (a campaign's Ctrl-C),
    /// and killed: no verdict on the kernel.
    Cancelled,
}

/// Everything a boot produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: RunStatus,
    /// The serial console, `\r` removed.
    pub serial: String,
    /// What QEMU itself printed on stderr.
    pub qemu_stderr: String,
    /// NMIs an `--nmi-storm` sent (QEMU merges NMIs that arrive while one
    /// is pending, so the kernel may count fewer).
    pub nmis_sent: Option<u64>,
}

/// One KTAP result line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtapResult {
    pub number: u32,
    pub ok: bool,
    pub name: String,
    /// The text after `# SKIP`, if the test was skipped.
    pub skip: Option<String>,
}

impl Outcome {
    pub fn new(status: RunStatus, serial: String, qemu_stderr: String) -> Self {
        Outcome { status, serial, qemu_stderr, nmis_sent: None }
    }

    /// Every `RESULT {json}` line, parsed (unparsable ones as `Err`).
    pub fn result_lines(&self) -> Vec<Result<serde_json::Value>> {
        self.serial
            .lines()
            .filter_map(|line| line.strip_prefix("RESULT "))
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|error| Error::json(format!("the RESULT line {json}"), error))
            })
            .collect()
    }

    /// The single well-formed `RESULT` object, if there is exactly one.
    pub fn result(&self) -> Option<serde_json::Value> {
        match self.result_lines().as_slice() {
            [Ok(value)] if value.is_object() => Some(value.clone()),
            _ => None,
        }
    }

    /// The `extregs` exit status (docs/design.md, "Contracts") and why.
    pub fn verdict(&self) -> (i32, String) {
        let result = self.result();
        let result_ok =
            result.as_ref().and_then(|r| r.get("ok")).and_then(serde_json::Value::as_bool);
        match self.status {
            RunStatus::TimedOut => (EXIT_TIMEOUT, "timed out: QEMU was killed".into()),
            RunStatus::Cancelled => (EXIT_INTERRUPTED, "cancelled: QEMU was killed".into()),
            RunStatus::Exited(Some(QEMU_EXIT_SUCCESS)) => match result_ok {
                Some(true) => (EXIT_SUCCESS, "kernel reported success".into()),
                Some(false) => (
                    EXIT_KERNEL_FAILURE,
                    "kernel exited with success but RESULT says ok=false".into(),
                ),
                None => (EXIT_KERNEL_FAILURE, self.result_problem()),
            },
            RunStatus::Exited(Some(QEMU_EXIT_FAILURE)) => {
                (EXIT_KERNEL_FAILURE, "kernel reported failure".into())
            }
            // QEMU's own exit status 1 with a silent guest: QEMU refused its
            // configuration (bad option, locked image, missing firmware...).
            RunStatus::Exited(Some(1)) if self.serial.trim().is_empty() => (
                EXIT_USAGE,
                format!(
                    "QEMU could not start the machine: {}",
                    self.qemu_stderr.lines().next().unwrap_or("no message")
                ),
            ),
            RunStatus::Exited(Some(code)) => (
                EXIT_KERNEL_FAILURE,
                format!(
                    "QEMU exited with {code} without the kernel's exit (crash or triple fault?)"
                ),
            ),
            RunStatus::Exited(None) => (EXIT_KERNEL_FAILURE, "QEMU was killed by a signal".into()),
        }
    }

    fn result_problem(&self) -> String {
        let lines = self.result_lines();
        match lines.as_slice() {
            [] => "no RESULT line: the kernel crashed".into(),
            [Err(e)] => format!("unparsable RESULT line: {e}"),
            [_] => "RESULT has no boolean \"ok\"".into(),
            many => format!("{} RESULT lines, expected exactly one", many.len()),
        }
    }

    /// KTAP result lines (`ok N name`, `not ok N name # SKIP why`).
    pub fn ktap_results(&self) -> Vec<KtapResult> {
        self.serial.lines().filter_map(parse_ktap_result).collect()
    }

    /// The declared plan (`1..N`), if present.
    pub fn ktap_plan(&self) -> Option<u32> {
        self.serial.lines().find_map(|line| line.strip_prefix("1..")?.trim().parse().ok())
    }
}

/// Parses one KTAP result line.
pub fn parse_ktap_result(line: &str) -> Option<KtapResult> {
    let (ok, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
        (false, rest)
    } else {
        (true, line.strip_prefix("ok ")?)
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = number.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((name, directive)) => (name, Some(directive)),
        None => (rest, None),
    };
    let skip =
        directive.and_then(|d| d.strip_prefix("SKIP")).map(|reason| reason.trim().to_string());
    Some(KtapResult { number, ok, name: name.trim().to_string(), skip })
}

/// The parts of a show_regs dump that tools compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowRegsDump {
    pub cs: u16,
    /// `RIP: 0010:<this>`: a symbol with `+0xoff/0xlen`, or plain hex.
    pub rip_text: String,
    /// Code bytes, and the index of the one in `<..>` (the byte at RIP).
    pub code: Vec<u8>,
    pub code_rip_index: usize,
    /// The stack segment from the `RSP: 002b:...` line.
    pub ss: Option<u16>,
    /// The saved PKRS from the `PKRS:` line, if present.
    pub saved_pkrs: Option<u32>,
    /// The task's own PKRS (`task:` on the `PKRS:` line), if present.
    pub task_pkrs: Option<u32>,
    /// The running task from the `CPU: 0 PID: 3 Comm: worker-2` line just
    /// before `RIP:`: (PID, name).
    pub task: Option<(u32, String)>,
}

/// Finds the first show_regs dump in a serial log.
pub fn parse_show_regs(serial: &str) -> Option<ShowRegsDump> {
    let lines: Vec<&str> = serial.lines().collect();
    let rip_at = lines.iter().position(|line| line.starts_with("RIP: "))?;
    let (cs, rip_text) = lines[rip_at]["RIP: ".len()..].split_once(':')?;
    let cs = u16::from_str_radix(cs, 16).ok()?;
    let code_line = lines[rip_at..].iter().find_map(|line| line.strip_prefix("Code: "))?;
    let mut code = Vec::new();
    let mut code_rip_index = None;
    for word in code_line.split_whitespace() {
        let byte = if let Some(inner) = word.strip_prefix('<').and_then(|w| w.strip_suffix('>')) {
            code_rip_index = Some(code.len());
            inner
        } else {
            word
        };
        code.push(u8::from_str_radix(byte, 16).ok()?);
    }
    let pkrs_line = lines[rip_at..].iter().find_map(|line| line.strip_prefix("PKRS: "));
    let saved_pkrs =
        pkrs_line.and_then(|rest| u32::from_str_radix(rest.split_whitespace().next()?, 16).ok());
    let task_pkrs = pkrs_line.and_then(|rest| {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let at = words.iter().position(|word| *word == "task:")?;
        u32::from_str_radix(words.get(at + 1)?, 16).ok()
    });
    let task = rip_at.checked_sub(1).and_then(|at| parse_task_line(lines[at]));
    let ss = lines[rip_at..].iter().find_map(|line| {
        let (ss, _) = line.strip_prefix("RSP: ")?.split_once(':')?;
        u16::from_str_radix(ss, 16).ok()
    });
    Some(ShowRegsDump {
        cs,
        rip_text: rip_text.trim().to_string(),
        code,
        code_rip_index: code_rip_index?,
        ss,
        saved_pkrs,
        task_pkrs,
        task,
    })
}

/// `CPU: 0 PID: 3 Comm: worker-2` -> (3, "worker-2").
fn parse_task_line(line: &str) -> Option<(u32, String)> {
    let rest = line.strip_prefix("CPU: ")?;
    let (_, rest) = rest.split_once(" PID: ")?;
    let (pid, name) = rest.split_once(" Comm: ")?;
    Some((pid.parse().ok()?, name.split_whitespace().next()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: i32, serial: &str) -> Outcome {
        Outcome::new(RunStatus::Exited(Some(code)), serial.into(), String::new())
    }

    #[test]
    fn success_needs_a_result_line_that_says_ok() {
        assert_eq!(
            outcome(33, "RESULT {\"mode\":\"demo\",\"ok\":true,\"pks\":true}\n").verdict().0,
            0
        );
        assert_eq!(outcome(33, "RESULT {\"ok\":false}\n").verdict().0, 1);
        assert_eq!(outcome(33, "booting\n").verdict().0, 1);
        assert_eq!(outcome(33, "RESULT {\"ok\":true}\nRESULT {\"ok\":true}\n").verdict().0, 1);
        assert_eq!(outcome(33, "RESULT {not json\n").verdict().0, 1);
    }

    #[test]
    fn failures_crashes_and_timeouts_map_to_their_codes() {
        assert_eq!(outcome(35, "RESULT {\"ok\":false}\n").verdict().0, 1);
        assert_eq!(outcome(0, "").verdict().0, 1);
        assert_eq!(outcome(1, "booting\n").verdict().0, 1);
        let refused = Outcome::new(RunStatus::Exited(Some(1)), String::new(), "bad -cpu".into());
        assert_eq!(refused.verdict(), (2, "QEMU could not start the machine: bad -cpu".into()));
        let hung = Outcome::new(RunStatus::TimedOut, String::new(), String::new());
        assert_eq!(hung.verdict().0, 124);
        let killed = Outcome::new(RunStatus::Exited(None), String::new(), String::new());
        assert_eq!(killed.verdict().0, 1);
        let cancelled = Outcome::new(RunStatus::Cancelled, String::new(), String::new());
        assert_eq!(cancelled.verdict().0, 130);
    }

    #[test]
    fn ktap_lines_parse() {
        assert_eq!(
            parse_ktap_result("ok 3 int3_frame"),
            Some(KtapResult { number: 3, ok: true, name: "int3_frame".into(), skip: None })
        );
        assert_eq!(
            parse_ktap_result("not ok 12 pks_fault # SKIP no PKS"),
            Some(KtapResult {
                number: 12,
                ok: false,
                name: "pks_fault".into(),
                skip: Some("no PKS".into())
            })
        );
        assert_eq!(parse_ktap_result("# ok 1 comment"), None);
        let o = outcome(33, "KTAP version 1\n1..2\nok 1 a\nnot ok 2 b\n");
        assert_eq!(o.ktap_plan(), Some(2));
        assert_eq!(o.ktap_results().len(), 2);
    }

    #[test]
    fn show_regs_dump_parses() {
        let serial = "oops\nCPU: 0 PID: 3 Comm: worker-2\n\
            RIP: 0010:extregs_kernel::oops+0x12/0x40\n\
            Code: 90 90 <0f> 0b 90\nRSP: 0018:ffff800000010000 EFLAGS: 00000046\n\
            PKRS: 55555554 live: 55555554 task: 55555550 rights: 0:rw\n";
        let dump = parse_show_regs(serial).unwrap();
        assert_eq!(dump.cs, 0x10);
        assert_eq!(dump.rip_text, "extregs_kernel::oops+0x12/0x40");
        assert_eq!(dump.code, [0x90, 0x90, 0x0f, 0x0b, 0x90]);
        assert_eq!(dump.code_rip_index, 2);
        assert_eq!(dump.saved_pkrs, Some(0x5555_5554));
        assert_eq!(dump.task_pkrs, Some(0x5555_5550));
        assert_eq!(dump.task, Some((3, "worker-2".to_string())));
        let without_task = parse_show_regs("RIP: 0010:f+0x1/0x2\nCode: <90>\n").unwrap();
        assert_eq!((without_task.task, without_task.task_pkrs), (None, None));
    }
}
