//! ZPL label printers: `label::parse_host_status` over arbitrary `~HS`
//! replies (as read from the printer's TCP socket, possibly in pieces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serialine_devices::label::status::{reply_complete, MAX_REPLY};
use serialine_devices::label::{parse_host_status, StatusError};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_host_status(data);
    let _ = reply_complete(data);
    match &parsed {
        Ok(s) => {
            // A parsed reply has three complete frames.
            assert!(data.iter().filter(|&&b| b == 0x03).count() >= 3);
            assert!(reply_complete(data));
            let _ = (s.fault_reason(), s.all_printed());
            if s.paper_out {
                assert_eq!(s.fault_reason(), Some("paper out"));
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if let StatusError::Stray { pos, byte } = e {
                assert_eq!(data.get(*pos), Some(byte));
            }
        }
    }
    // What the driver does: read until three ETX have arrived (refusing
    // more than MAX_REPLY bytes), then parse what it has.
    let mut etx = 0;
    if let Some(end) = data.iter().position(|&b| {
        etx += usize::from(b == 0x03);
        etx == 3
    }) {
        let prefix = &data[..=end];
        assert!(reply_complete(prefix));
        assert!(!reply_complete(&prefix[..end]));
        if prefix.len() <= MAX_REPLY {
            let _ = parse_host_status(prefix);
        }
    }
});
