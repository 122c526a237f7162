//! A minimal QMP client (QEMU Machine Protocol, JSON over a Unix socket):
//! enough to negotiate capabilities and run commands such as `inject-nmi`
//! against a kernel booted with `extregs run --qmp PATH`.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket` (retrying until QEMU has created it, up to
    /// `wait`), reads the greeting and enters command mode.
    pub fn connect(socket: &Path, wait: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() >= deadline => {
                    return Err(Error::io(
                        format!("connecting to QMP at {}", socket.display()),
                        error,
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|error| Error::io("setting the QMP socket's timeout", error))?;
        let writer =
            stream.try_clone().map_err(|error| Error::io("cloning the QMP socket", error))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|error| Error::io("reading from QMP", error))?;
        if read == 0 {
            return Err(Error::Qmp("the connection closed".into()));
        }
        serde_json::from_str(&line)
            .map_err(|error| Error::json(format!("QMP's message {line}"), error))
    }

    /// Runs one command and returns its `return` value; QMP errors become
    /// `Err` with QEMU's description. Asynchronous events are skipped.
    pub fn execute(&mut self, command: &str) -> Result<Value> {
        let request = json!({ "execute": command }).to_string() + "\n";
        self.writer
            .write_all(request.as_bytes())
            .map_err(|error| Error::io("writing to QMP", error))?;
        loop {
            let reply = self.read_message()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                return Err(Error::Qmp(format!(
                    "{command}: {}",
                    error["desc"].as_str().unwrap_or("error")
                )));
            }
            // {"event": ...}: not the reply.
        }
    }

    /// Injects one NMI (QMP `inject-nmi`: QEMU raises it on LINT1 of every
    /// CPU whose APIC is enabled).
    pub fn inject_nmi(&mut self) -> Result<()> {
        self.execute("inject-nmi").map(|_| ())
    }
}
