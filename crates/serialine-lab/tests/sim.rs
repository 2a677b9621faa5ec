//! `serialine-lab sim` as a bench setup uses it: the printer simulator and its
//! camera come up on the addresses given and take connections.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn sim_printer_listens_and_announces_its_addresses() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .args([
            "sim",
            "printer",
            "--listen",
            "127.0.0.1:0",
            "--camera-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("serialine-lab sim printer starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("announcement");
    // "printer simulator on 127.0.0.1:P, camera simulator on 127.0.0.1:Q; ..."
    let addrs: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| w.starts_with("127.0.0.1:"))
        .collect();
    assert_eq!(addrs.len(), 2, "{line}");
    for a in &addrs {
        std::net::TcpStream::connect(a).unwrap_or_else(|e| panic!("{a}: {e} ({line})"));
    }
    let _ = child.kill();
    let _ = child.wait();
}
