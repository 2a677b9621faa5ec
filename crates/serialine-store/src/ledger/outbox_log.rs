//! The outbox as a log of chunks (schema 7): one `outbox_log` value holds
//! the events of up to [`CHUNK_EVENTS`] consecutive sequence numbers, keyed
//! by the first, each cleared when upstream acknowledges it; a chunk whose
//! every event is acknowledged is removed.
//!
//! Why: sled 0.34 costs about 100 bytes of disk and a share of a page-table
//! entry per key, however small the key and value (BENCHMARKS.md, "Issue
//! 16: what a key costs, …"). One key per outcome made a broker outage
//! cost memory and disk per queued event, and every outcome cost a key's
//! insert and, at its acknowledgment, a key's removal. A chunk is one key
//! for up to 64 events, a unit's event no longer stores its id (it is
//! `event_id(line, serial, state)`, derived again when read), and a batch
//! appends to the chunk at the log's tail while it has room.
//!
//! Entries schema 6 and before wrote (one `outbox` key per event, by
//! sequence number) are read and acknowledged where they are: they precede
//! every chunk, drain as upstream acknowledges them, and need no migration.

use super::{Ledger, Tx, TxResult, MAX_VALUE_BYTES};
use crate::error::StoreError;
use crate::outbox::{event_id, EventDetail, OutboxEvent};
use serde::{Deserialize, Serialize};
use serialine_core::{Serial, UnitState};
use std::collections::BTreeMap;

/// Most events in one chunk: a batch rewrites the tail chunk it appends
/// to, so this bounds what a batch of one outcome writes (about 2 KiB).
pub(crate) const CHUNK_EVENTS: usize = 64;
/// Most bytes of one chunk's value: under the ledger's value bound, with
/// room for the journal's framing. One event alone always fits (a return or
/// aggregation event names at most `RETURN_EVENT_SERIALS` serials).
pub(crate) const CHUNK_BYTES: usize = MAX_VALUE_BYTES - 64;

/// Value of the `outbox_log` tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OutboxChunk {
    /// Events not yet acknowledged. First, so the outbox's depth is read
    /// from each value's first bytes.
    live: u16,
    /// The event of sequence number `key + i`; `None` once acknowledged.
    events: Vec<Option<StoredEvent>>,
}

/// An event as a chunk stores it: its sequence number is its place.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEvent {
    /// `None` for a unit's outcome, whose id is
    /// `event_id(line, serial, state)`; stored for every other event.
    id: Option<[u8; 32]>,
    serial: Serial,
    state: UnitState,
    at_ms: u64,
    detail: EventDetail,
}

impl StoredEvent {
    fn of(event: OutboxEvent) -> Self {
        let derived = matches!(event.detail, EventDetail::Unit);
        StoredEvent {
            id: (!derived).then_some(event.id),
            serial: event.serial,
            state: event.state,
            at_ms: event.at_ms,
            detail: event.detail,
        }
    }

    fn into_event(self, line: &str, seq: u64) -> OutboxEvent {
        let id = self
            .id
            .unwrap_or_else(|| event_id(line, &self.serial, self.state));
        OutboxEvent {
            seq,
            id,
            serial: self.serial,
            state: self.state,
            at_ms: self.at_ms,
            detail: self.detail,
        }
    }
}

impl OutboxChunk {
    fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// The live count alone, from a value's first bytes.
    fn live_of(bytes: &[u8]) -> Result<u16, postcard::Error> {
        postcard::take_from_bytes::<u16>(bytes).map(|(live, _)| live)
    }
}

/// A chunk's new value by its first seq; `None`: removed.
pub(super) type ChunkWrite = (u64, Option<Vec<u8>>);

/// A chunk the batch read or changed, with its encoded size so far.
#[derive(Debug)]
pub(super) struct ChunkEdit {
    chunk: OutboxChunk,
    bytes: usize,
    dirty: bool,
}

/// The batch's view of the log: the chunks it touched, by first seq.
#[derive(Debug, Default)]
pub(super) struct LogEdits {
    chunks: BTreeMap<u64, ChunkEdit>,
}

impl LogEdits {
    /// The chunks' new values (`None`: every event acknowledged, removed).
    pub(super) fn into_writes(self) -> Result<Vec<ChunkWrite>, postcard::Error> {
        let mut out = Vec::new();
        for (first, edit) in self.chunks {
            if !edit.dirty {
                continue;
            }
            if edit.chunk.live == 0 {
                out.push((first, None));
            } else {
                out.push((first, Some(edit.chunk.encode()?)));
            }
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Loads chunk `first` from the committed log into the batch's edits.
    fn load_chunk(&mut self, first: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if self.log.chunks.contains_key(&first) {
            return Ok(());
        }
        let chunk = OutboxChunk::decode(bytes)
            .map_err(|e| self.corrupt(format!("outbox chunk {first}: {e}")))?;
        self.log.chunks.insert(
            first,
            ChunkEdit {
                chunk,
                bytes: bytes.len(),
                dirty: false,
            },
        );
        Ok(())
    }

    /// The chunk holding `seq`, committed or this batch's: its first seq.
    fn chunk_of(&mut self, seq: u64) -> TxResult<Result<Option<u64>, StoreError>> {
        let edited = self.log.chunks.range(..=seq).next_back().map(|(f, _)| *f);
        let committed = match self.outbox_log.range(..=seq.to_be_bytes()).next_back() {
            Some(item) => {
                let (k, v) = item?;
                match super::decode_u64(&k) {
                    Some(first) => Some((first, v)),
                    None => return Ok(Err(self.corrupt("outbox chunk key".into()))),
                }
            }
            None => None,
        };
        let first = match (edited, committed) {
            (Some(e), Some((c, _))) if e >= c => Some(e),
            (_, Some((c, v))) => {
                if let Err(e) = self.load_chunk(c, &v) {
                    return Ok(Err(e));
                }
                Some(c)
            }
            (e, None) => e,
        };
        Ok(Ok(first.filter(|f| {
            self.log
                .chunks
                .get(f)
                .is_some_and(|c| seq < f + c.chunk.events.len() as u64)
        })))
    }

    /// Appends `event` (its seq is `next_seq`) to the log's tail chunk, or
    /// to a new chunk when the tail is full or gone.
    pub(super) fn append_event(&mut self, event: OutboxEvent) -> TxResult<Result<(), StoreError>> {
        let seq = event.seq;
        let stored = StoredEvent::of(event);
        let Ok(size) = postcard::to_stdvec(&Some(&stored)).map(|b| b.len()) else {
            return Ok(Err(
                self.corrupt(format!("outbox event {seq} does not encode"))
            ));
        };
        if size + 8 > CHUNK_BYTES {
            return Ok(Err(self.corrupt(format!(
                "outbox event {seq} of {} is {size} bytes, above the chunk bound",
                stored.serial
            ))));
        }
        let tail = match seq.checked_sub(1) {
            Some(last) => match self.chunk_of(last)? {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            },
            None => None,
        };
        let fits = |edit: &ChunkEdit| {
            edit.chunk.events.len() < CHUNK_EVENTS && edit.bytes + size + 3 <= CHUNK_BYTES
        };
        let first = match tail {
            Some(t) if self.log.chunks.get(&t).is_some_and(fits) => t,
            _ => {
                self.log.chunks.insert(
                    seq,
                    ChunkEdit {
                        chunk: OutboxChunk::default(),
                        bytes: 2,
                        dirty: true,
                    },
                );
                seq
            }
        };
        if let Some(edit) = self.log.chunks.get_mut(&first) {
            debug_assert_eq!(first + edit.chunk.events.len() as u64, seq);
            edit.chunk.events.push(Some(stored));
            edit.chunk.live += 1;
            edit.bytes += size;
            edit.dirty = true;
        }
        Ok(Ok(()))
    }

    /// Event `seq` as the batch sees it: `None` if it is not in the outbox
    /// (acknowledged before). Schema 6's per-event entries are looked up
    /// where no chunk holds `seq`.
    pub(super) fn event_at(
        &mut self,
        seq: u64,
    ) -> TxResult<Result<Option<OutboxEvent>, StoreError>> {
        let first = match self.chunk_of(seq)? {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(first) = first {
            let stored = self
                .log
                .chunks
                .get(&first)
                .and_then(|edit| edit.chunk.events[(seq - first) as usize].clone());
            return Ok(Ok(stored.map(|s| s.into_event(self.line, seq))));
        }
        match self.outbox.get(seq.to_be_bytes())? {
            None => Ok(Ok(None)),
            Some(v) => match OutboxEvent::decode(&v) {
                Ok(e) => Ok(Ok(Some(e))),
                Err(e) => Ok(Err(self.corrupt(format!("outbox entry {seq}: {e}")))),
            },
        }
    }

    /// Removes event `seq`, which [`Tx::event_at`] found, from the outbox.
    pub(super) fn remove_event(&mut self, seq: u64) -> TxResult<()> {
        if let Ok(Some(first)) = self.chunk_of(seq)? {
            if let Some(edit) = self.log.chunks.get_mut(&first) {
                if edit.chunk.events[(seq - first) as usize].take().is_some() {
                    edit.chunk.live = edit.chunk.live.saturating_sub(1);
                    edit.dirty = true;
                }
            }
            return Ok(());
        }
        self.outbox.remove(seq.to_be_bytes());
        Ok(())
    }
}

impl Ledger {
    /// The oldest `max` events not acknowledged, schema 6's entries first.
    pub fn outbox_peek(&self, max: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out: Vec<OutboxEvent> = Vec::new();
        for item in self.scan(&self.outbox) {
            if out.len() >= max {
                return Ok(out);
            }
            let (_, v) = item.map_err(self.io())?;
            out.push(
                OutboxEvent::decode(&v).map_err(|e| self.corrupt(format!("outbox entry: {e}")))?,
            );
        }
        for item in self.scan(&self.outbox_log) {
            let (k, v) = item.map_err(self.io())?;
            let first = super::decode_u64(&k).ok_or_else(|| self.corrupt("outbox chunk key"))?;
            let chunk = OutboxChunk::decode(&v)
                .map_err(|e| self.corrupt(format!("outbox chunk {first}: {e}")))?;
            for (i, stored) in chunk.events.into_iter().enumerate() {
                if out.len() >= max {
                    return Ok(out);
                }
                if let Some(stored) = stored {
                    out.push(stored.into_event(&self.line_id, first + i as u64));
                }
            }
        }
        Ok(out)
    }

    /// Events not yet acknowledged.
    pub fn outbox_len(&self) -> usize {
        let mut n = {
            let _batch = self.read_gate();
            self.outbox.len()
        };
        for (_, v) in self.scan(&self.outbox_log).flatten() {
            n += usize::from(OutboxChunk::live_of(&v).unwrap_or(0));
        }
        n
    }
}
