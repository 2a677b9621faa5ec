//! The packaging hierarchy's rules (`crate::hierarchy`), applied inside a
//! batch: a pack or unpack is checked whole before its first write, so a
//! refused one changes nothing.

use super::{Ledger, Tx, TxResult};
use crate::error::StoreError;
use crate::hierarchy::{HierarchyMove, ParentEntry, ParentState, MAX_CHILDREN, MAX_DEPTH};
use crate::ledger::Applied;
use crate::outbox::{aggregation_event_id, EventDetail, OutboxEvent, RETURN_EVENT_SERIALS};
use crate::record::SerialRecord;
use serialine_core::{Serial, UnitState};
use std::collections::HashSet;

/// `children` key: the parent, a 0 byte (never in a serial), the child.
fn child_key(parent: &Serial, child: &Serial) -> Vec<u8> {
    let mut k = Vec::with_capacity(parent.as_bytes().len() + 1 + child.as_bytes().len());
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(child.as_bytes());
    k
}

fn prefix_of(parent: &Serial) -> Vec<u8> {
    let mut k = parent.as_bytes().to_vec();
    k.push(0);
    k
}

fn serial_from(bytes: &[u8]) -> Option<Serial> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| Serial::new(s).ok())
}

/// A unit that may sit in a parent: committed, or acknowledged upstream.
fn packable(state: UnitState) -> bool {
    matches!(state, UnitState::Committed | UnitState::Synced)
}

/// Why a serial with record `r` (none: never sent; `issued`: in a block
/// this line holds), packed in `parent`, may not be a child of a parent of
/// `job` (none: it may). The one statement of a child's fitness, for the
/// ledger's pack and the line's check before it prints a label.
pub(crate) fn unfit_reason(
    r: Option<&SerialRecord>,
    issued: bool,
    parent: Option<&Serial>,
    job: u32,
) -> Option<String> {
    match r {
        None if issued => Some("never sent".to_string()),
        None => Some("foreign: never issued to this line".to_string()),
        Some(r) if !packable(r.state) => Some(match r.state {
            UnitState::Sampled(p) => format!("sampled ({})", p.as_str()),
            UnitState::Decommissioned(d) => format!("decommissioned ({})", d.as_str()),
            other => format!("{other}, not committed"),
        }),
        Some(r) if r.job != job => Some(format!("of job {}, the parent of job {job}", r.job)),
        Some(_) => parent.map(|p| format!("already in {p}")),
    }
}

impl Tx<'_> {
    fn refuse(
        parent: &Serial,
        why: impl Into<String>,
        mut offending: Vec<(Serial, String)>,
    ) -> TxResult<Result<Applied, StoreError>> {
        offending.truncate(100);
        Ok(Err(StoreError::HierarchyRefused {
            parent: parent.clone(),
            why: why.into(),
            offending,
        }))
    }

    fn record_of(&self, serial: &Serial) -> TxResult<Result<Option<SerialRecord>, StoreError>> {
        Ok(self.record_at(serial)?.map(|f| f.map(|(r, _)| r)))
    }

    fn parent_entry(&self, parent: &Serial) -> TxResult<Result<Option<ParentEntry>, StoreError>> {
        Ok(match self.parents.get(parent.as_bytes())? {
            None => Ok(None),
            Some(v) => ParentEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("parent entry of {parent} unreadable"))),
        })
    }

    fn parent_of_serial(&self, child: &Serial) -> TxResult<Option<Serial>> {
        Ok(self
            .parent_of
            .get(child.as_bytes())?
            .and_then(|v| serial_from(&v)))
    }

    /// Why `serial` may not be a child (none: it may).
    fn unfit_child(
        &mut self,
        serial: &Serial,
        job: u32,
    ) -> TxResult<Result<Option<String>, StoreError>> {
        let r = match self.record_of(serial)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let issued = r.is_some() || self.issued_block_of(&self.index_key_of(serial)).is_some();
        let parent = match &r {
            Some(r) if packable(r.state) && r.job == job => self.parent_of_serial(serial)?,
            _ => None,
        };
        Ok(Ok(unfit_reason(r.as_ref(), issued, parent.as_ref(), job)))
    }

    /// Packs `children` into `parent` (see `crate::hierarchy`).
    pub(super) fn pack(
        &mut self,
        parent: &Serial,
        children: &[Serial],
    ) -> TxResult<Result<Applied, StoreError>> {
        self.pack_with(parent, children, None)
    }

    /// The line's aggregation: `parent`'s label, sent to the label printer
    /// (`Sent`), was verified by its scanner; it is committed and packed
    /// with `children` in one batch, or (any child refused, or the label
    /// not in flight) nothing changes. `expected`: children of a full
    /// parent of its level.
    pub(super) fn seal_parent(
        &mut self,
        parent: &Serial,
        children: &[Serial],
        expected: u32,
    ) -> TxResult<Result<Applied, StoreError>> {
        self.pack_with(parent, children, Some(expected))
    }

    /// A pack (`seal` none) or a seal (the label committed first, `seal`
    /// its level's full count): everything checked before the first write.
    fn pack_with(
        &mut self,
        parent: &Serial,
        children: &[Serial],
        seal: Option<u32>,
    ) -> TxResult<Result<Applied, StoreError>> {
        if children.is_empty() || children.len() > MAX_CHILDREN {
            return Self::refuse(
                parent,
                format!(
                    "{} children named; 1 to {MAX_CHILDREN} per request",
                    children.len()
                ),
                Vec::new(),
            );
        }
        let prec = match self.record_of(parent)? {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Self::refuse(
                    parent,
                    "the parent code was never printed and verified here",
                    Vec::new(),
                )
            }
            Err(e) => return Ok(Err(e)),
        };
        if seal.is_some() && !prec.state.is_in_flight() {
            return Self::refuse(
                parent,
                format!(
                    "the parent's label is {}, not in flight to its scanner: a label is sealed once",
                    prec.state
                ),
                Vec::new(),
            );
        }
        if seal.is_none() && !packable(prec.state) {
            return Self::refuse(
                parent,
                format!(
                    "the parent's label is {} (it must be verified: committed)",
                    prec.state
                ),
                Vec::new(),
            );
        }
        let entry = match self.parent_entry(parent)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        if seal.is_some() && entry.is_some() {
            return Ok(Err(self.corrupt(format!(
                "label {parent} is in flight but already holds children"
            ))));
        }
        if entry.is_some_and(|e| e.state == ParentState::Emptied) {
            return Self::refuse(
                parent,
                "the parent was emptied; a parent code is used once",
                Vec::new(),
            );
        }
        // The parent's own ancestors may not go inside it.
        let mut ancestors: HashSet<Serial> = HashSet::new();
        let mut up = parent.clone();
        while let Some(p) = self.parent_of_serial(&up)? {
            if ancestors.len() >= MAX_DEPTH || !ancestors.insert(p.clone()) {
                return Ok(Err(self.corrupt(format!(
                    "the hierarchy above {parent} loops or is deeper than {MAX_DEPTH}"
                ))));
            }
            up = p;
        }
        if ancestors.len() + 1 >= MAX_DEPTH {
            return Self::refuse(
                parent,
                format!("packing deeper than {MAX_DEPTH} levels"),
                Vec::new(),
            );
        }
        let mut offending = Vec::new();
        let mut seen: HashSet<&Serial> = HashSet::new();
        for c in children {
            if !seen.insert(c) {
                offending.push((c.clone(), "named twice".to_string()));
                continue;
            }
            if c == parent || ancestors.contains(c) {
                offending.push((c.clone(), "the parent itself, or holds it".to_string()));
                continue;
            }
            match self.unfit_child(c, prec.job)? {
                Ok(None) => {}
                Ok(Some(why)) => offending.push((c.clone(), why)),
                Err(e) => return Ok(Err(e)),
            }
        }
        if !offending.is_empty() {
            return Self::refuse(
                parent,
                format!(
                    "{} of {} children refused; nothing packed",
                    offending.len(),
                    children.len()
                ),
                offending,
            );
        }
        // Checked: now the writes. A sealed label is committed first (its
        // own outbox event), so the pack below finds it committed.
        let mut parent_state = prec.state;
        if seal.is_some() {
            match self.transition(parent, UnitState::Committed, None, None)? {
                Ok(_) => parent_state = UnitState::Committed,
                Err(e) => return Ok(Err(e)),
            }
        }
        let held = entry.map_or(0, |e| e.children);
        let next = ParentEntry {
            state: ParentState::Packed,
            children: held + children.len() as u32,
            job: prec.job,
            packed_ms: entry.map_or(self.now_ms, |e| e.packed_ms),
            expected: seal.or(entry.map(|e| e.expected)).unwrap_or(0),
        };
        let Ok(bytes) = postcard::to_stdvec(&next) else {
            return Ok(Err(
                self.corrupt(format!("parent entry of {parent} does not encode"))
            ));
        };
        self.parents.insert(parent.as_bytes(), bytes);
        for c in children {
            self.parent_of.insert(c.as_bytes(), parent.as_bytes());
            self.children.insert(child_key(parent, c), []);
        }
        let events = match self.aggregation_events(parent, parent_state, children, None) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Applied::Hierarchy(HierarchyMove {
            children: children.len() as u32,
            events,
            holds: next.children,
        })))
    }

    /// Takes `children` out of `parent`, or (`None`) everything, emptying
    /// it for good.
    pub(super) fn unpack(
        &mut self,
        parent: &Serial,
        children: Option<&[Serial]>,
    ) -> TxResult<Result<Applied, StoreError>> {
        let entry = match self.parent_entry(parent)? {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Self::refuse(
                    parent,
                    "not a parent: nothing was ever packed into it",
                    Vec::new(),
                )
            }
            Err(e) => return Ok(Err(e)),
        };
        if entry.state == ParentState::Emptied {
            return Self::refuse(parent, "already emptied", Vec::new());
        }
        let held: Vec<Serial> = self
            .children
            .keys_with_prefix(&prefix_of(parent))?
            .iter()
            .filter_map(|k| serial_from(&k[parent.as_bytes().len() + 1..]))
            .collect();
        let taking: Vec<Serial> = match children {
            None => held.clone(),
            Some(list) => {
                if list.is_empty() || list.len() > MAX_CHILDREN {
                    return Self::refuse(
                        parent,
                        format!(
                            "{} children named; 1 to {MAX_CHILDREN} per request",
                            list.len()
                        ),
                        Vec::new(),
                    );
                }
                let inside: HashSet<&Serial> = held.iter().collect();
                let mut seen = HashSet::new();
                let offending: Vec<(Serial, String)> = list
                    .iter()
                    .filter_map(|c| {
                        if !seen.insert(c) {
                            Some((c.clone(), "named twice".to_string()))
                        } else if !inside.contains(c) {
                            Some((c.clone(), "not in this parent".to_string()))
                        } else {
                            None
                        }
                    })
                    .collect();
                if !offending.is_empty() {
                    return Self::refuse(parent, "nothing taken out", offending);
                }
                list.to_vec()
            }
        };
        for c in &taking {
            self.parent_of.remove(c.as_bytes());
            self.children.remove(child_key(parent, c));
        }
        let all = children.is_none();
        let next = ParentEntry {
            state: if all {
                ParentState::Emptied
            } else {
                ParentState::Packed
            },
            children: entry.children.saturating_sub(taking.len() as u32),
            ..entry
        };
        let Ok(bytes) = postcard::to_stdvec(&next) else {
            return Ok(Err(
                self.corrupt(format!("parent entry of {parent} does not encode"))
            ));
        };
        self.parents.insert(parent.as_bytes(), bytes);
        let state = match self.record_of(parent)? {
            Ok(Some(r)) => r.state,
            Ok(None) => UnitState::Committed,
            Err(e) => return Ok(Err(e)),
        };
        let events = match self.aggregation_events(parent, state, &taking, Some(all)) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Applied::Hierarchy(HierarchyMove {
            children: taking.len() as u32,
            events,
            holds: next.children,
        })))
    }

    /// One outbox event per [`RETURN_EVENT_SERIALS`] children: a pack
    /// (`unpack` `None`) or an unpack (`Some(emptied)`). An emptied parent
    /// with no children left still tells upstream, in one event.
    fn aggregation_events(
        &mut self,
        parent: &Serial,
        state: UnitState,
        children: &[Serial],
        unpack: Option<bool>,
    ) -> Result<u32, StoreError> {
        let empty: [Serial; 0] = [];
        let chunks: Vec<&[Serial]> = if children.is_empty() {
            vec![&empty[..]]
        } else {
            children.chunks(RETURN_EVENT_SERIALS).collect()
        };
        let mut n = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let (action, detail) = match unpack {
                None => (
                    "pack",
                    EventDetail::Pack {
                        children: chunk.to_vec(),
                    },
                ),
                Some(all) => (
                    "unpack",
                    // Only the last event says the parent is empty.
                    EventDetail::Unpack {
                        children: chunk.to_vec(),
                        all: all && i + 1 == chunks.len(),
                    },
                ),
            };
            let event = OutboxEvent {
                seq: self.next_seq,
                id: aggregation_event_id(
                    self.line,
                    action,
                    parent,
                    chunk,
                    self.next_seq,
                    self.now_ms,
                ),
                serial: parent.clone(),
                state,
                at_ms: self.now_ms,
                detail,
            };
            self.enqueue(event)?;
            n += 1;
        }
        Ok(n)
    }
}

impl Ledger {
    /// The parent `child` is in, if any.
    pub fn parent_of(&self, child: &Serial) -> Result<Option<Serial>, StoreError> {
        let _batch = self.read_gate();
        Ok(self
            .parent_of
            .get(child.as_bytes())
            .map_err(self.io())?
            .and_then(|v| serial_from(&v)))
    }

    /// What `parent` holds, and its entry (none: never a parent).
    pub fn contents(
        &self,
        parent: &Serial,
    ) -> Result<Option<(ParentEntry, Vec<Serial>)>, StoreError> {
        let _batch = self.read_gate();
        let Some(v) = self.parents.get(parent.as_bytes()).map_err(self.io())? else {
            return Ok(None);
        };
        let entry = ParentEntry::decode(&v)
            .ok_or_else(|| self.corrupt(format!("parent entry of {parent} unreadable")))?;
        let mut children = Vec::new();
        for item in self.children.scan_prefix(prefix_of(parent)) {
            let (k, _) = item.map_err(self.io())?;
            let child = serial_from(&k[parent.as_bytes().len() + 1..])
                .ok_or_else(|| self.corrupt(format!("a child of {parent} is not a serial")))?;
            children.push(child);
        }
        Ok(Some((entry, children)))
    }

    /// Every parent with its entry, in serial order.
    pub fn parents(&self) -> Result<Vec<(Serial, ParentEntry)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.parents) {
            let (k, v) = item.map_err(self.io())?;
            let parent =
                serial_from(&k).ok_or_else(|| self.corrupt("a parent key is not a serial"))?;
            let entry = ParentEntry::decode(&v)
                .ok_or_else(|| self.corrupt(format!("parent entry of {parent} unreadable")))?;
            out.push((parent, entry));
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Why the after-commit move `to` of `serial` is refused by the
    /// hierarchy (none: it may move): a unit inside a parent is taken out
    /// first, and a parent holding units is not decommissioned alone.
    pub(super) fn held_by_hierarchy(
        &self,
        serial: &Serial,
        to: UnitState,
    ) -> TxResult<Result<Option<StoreError>, StoreError>> {
        // A whole tree decommissioned together leaves no unit behind.
        if !to.is_after_commit() || self.whole_tree {
            return Ok(Ok(None));
        }
        if let Some(p) = self.parent_of_serial(serial)? {
            return Ok(Ok(Some(StoreError::HierarchyRefused {
                parent: p.clone(),
                why: format!(
                    "{serial} is packed in it: take it out first (serialine unpack {p} {serial})"
                ),
                offending: Vec::new(),
            })));
        }
        let entry = match self.parent_entry(serial)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(e) = entry.filter(|e| e.state == ParentState::Packed && e.children > 0) {
            return Ok(Ok(Some(StoreError::HierarchyRefused {
                parent: serial.clone(),
                why: format!(
                    "it holds {} children; {to} of the parent alone would leave them in a parent that is gone: unpack it first",
                    e.children
                ),
                offending: Vec::new(),
            })));
        }
        Ok(Ok(None))
    }
}

/// Most serials one decommissioning with children moves (a pallet of
/// cases of units).
pub const MAX_TREE: usize = 100_000;

impl Tx<'_> {
    /// `root` and everything packed below it move to `to` (a
    /// decommissioning), all or none; the hierarchy stays as it was, every
    /// serial in it now ended. Refused, naming them, if any of them may
    /// not move.
    pub(super) fn decommission_tree(
        &mut self,
        root: &Serial,
        to: UnitState,
    ) -> TxResult<Result<Applied, StoreError>> {
        if !matches!(to, UnitState::Decommissioned(_)) {
            return Self::refuse(root, format!("{to} is not a decommissioning"), Vec::new());
        }
        if let Some(p) = self.parent_of_serial(root)? {
            return Self::refuse(
                &p,
                format!("{root} is packed in it: take it out first, or decommission {p} with its children"),
                Vec::new(),
            );
        }
        // Breadth first, bounded: the tree below the root.
        let mut tree: Vec<Serial> = vec![root.clone()];
        let mut level: Vec<Serial> = vec![root.clone()];
        for _ in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for p in &level {
                for k in self.children.keys_with_prefix(&prefix_of(p))? {
                    if let Some(c) = serial_from(&k[p.as_bytes().len() + 1..]) {
                        next.push(c);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            tree.extend(next.iter().cloned());
            if tree.len() > MAX_TREE {
                return Self::refuse(
                    root,
                    format!("more than {MAX_TREE} serials below it"),
                    Vec::new(),
                );
            }
            level = next;
        }
        let mut offending = Vec::new();
        for s in &tree {
            match self.record_of(s)? {
                Ok(Some(r)) if r.state.can_move_to(to) => {}
                Ok(Some(r)) => {
                    offending.push((s.clone(), format!("{} cannot become {to}", r.state)))
                }
                Ok(None) => offending.push((s.clone(), "never sent".to_string())),
                Err(e) => return Ok(Err(e)),
            }
        }
        if !offending.is_empty() {
            return Self::refuse(
                root,
                format!(
                    "{} of the {} serials may not be decommissioned; nothing moved",
                    offending.len(),
                    tree.len()
                ),
                offending,
            );
        }
        self.whole_tree = true;
        for s in &tree {
            match self.transition(s, to, None, None) {
                Ok(Ok(_)) => {}
                other => {
                    self.whole_tree = false;
                    return other;
                }
            }
        }
        self.whole_tree = false;
        Ok(Ok(Applied::Hierarchy(HierarchyMove {
            children: tree.len() as u32 - 1,
            events: tree.len() as u32,
            holds: 0,
        })))
    }
}
