//! Laser marker (Modbus): the pure decoders the driver applies to register
//! words read from the marker — `decode_status`, `counter_delta`,
//! `unpack_code` — plus `pack_code` (its inverse) and register-map
//! validation, over arbitrary words and (unvalidated) bit numbers.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serialine_devices::laser::map::MAX_WRITE_REGISTERS;
use serialine_devices::laser::{
    counter_delta, decode_status, pack_code, unpack_code, LaserRegisterMap, LaserState, StatusBits,
    Trigger,
};

#[derive(Debug, Arbitrary)]
struct Input {
    status_word: u16,
    busy_bit: u8,
    error_bit: u8,
    interlock_open_bit: u8,
    counter_before: u16,
    counter_now: u16,
    /// Code text registers as read back from the marker.
    words: Vec<u16>,
    /// Length register, if the map has one.
    len: Option<u16>,
    /// A code to pack, and the marker's field size.
    code: String,
    max_len: u16,
    /// Map fields for `validate`.
    code_start: u16,
    poll_interval_ms: u64,
    trigger_is_coil: bool,
}

fuzz_target!(|input: Input| {
    let bits = StatusBits {
        register: 0,
        busy_bit: input.busy_bit,
        error_bit: input.error_bit,
        interlock_open_bit: input.interlock_open_bit,
    };

    // Status: bits outside 0..=15 read as clear; state follows the documented priority.
    let s = decode_status(input.status_word, &bits);
    let bit = |b: u8| b < 16 && input.status_word >> b & 1 == 1;
    assert_eq!(s.busy, bit(input.busy_bit));
    assert_eq!(s.error, bit(input.error_bit));
    assert_eq!(s.interlock_open, bit(input.interlock_open_bit));
    let state = s.state();
    match state {
        LaserState::InterlockOpen => assert!(s.interlock_open),
        LaserState::Error => assert!(s.error && !s.interlock_open),
        LaserState::Busy => assert!(s.busy && !s.error && !s.interlock_open),
        LaserState::Ready => assert!(!s.busy && !s.error && !s.interlock_open),
    }
    assert_eq!(
        s.fault_reason().is_some(),
        matches!(state, LaserState::InterlockOpen | LaserState::Error)
    );

    // Counter: the delta brings `before` to `now` modulo 2^16.
    let d = counter_delta(input.counter_before, input.counter_now);
    assert_eq!(input.counter_before.wrapping_add(d), input.counter_now);
    assert_eq!(counter_delta(input.counter_now, input.counter_now), 0);

    // Code registers read back: never more characters than bytes available.
    let len = input.len.map(usize::from);
    let text = unpack_code(&input.words, len);
    let available = (input.words.len() * 2).min(len.unwrap_or(usize::MAX));
    assert!(text.chars().count() <= available);
    assert!(!text.contains('\0'));

    // Pack -> unpack round trip, with and without a length register.
    match pack_code(&input.code, input.max_len) {
        Ok(words) => {
            assert_eq!(words.len(), usize::from(input.max_len.div_ceil(2)));
            assert_eq!(unpack_code(&words, None), input.code);
            assert_eq!(unpack_code(&words, Some(input.code.len())), input.code);
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(
                input.code.is_empty()
                    || input.code.len() > usize::from(input.max_len)
                    || input.code.chars().any(|c| !c.is_ascii() || c == '\0')
            );
        }
    }

    // Register map validation never panics; a valid map's code field fits.
    let map = LaserRegisterMap {
        unit_id: 1,
        code_start: input.code_start,
        code_max_len: input.max_len,
        length_register: input.len,
        trigger: if input.trigger_is_coil {
            Trigger::Coil {
                address: input.counter_before,
            }
        } else {
            Trigger::Register {
                address: input.counter_before,
                value: input.counter_now,
            }
        },
        status: bits,
        mark_counter_register: input.counter_now,
        poll_interval_ms: input.poll_interval_ms,
        fnc1: None,
    };
    if map.validate().is_ok() {
        let regs = map.code_registers();
        assert!(regs >= 1 && regs <= MAX_WRITE_REGISTERS);
        assert!(input.code_start.checked_add(regs - 1).is_some());
        assert!(input.busy_bit < 16 && input.error_bit < 16 && input.interlock_open_bit < 16);
    }
});
