//! The packaging hierarchy's part of [`Store`]: packing committed units
//! into parents, taking them out, reading it back. Rules in
//! `hierarchy.rs`, enforced by the ledger.

use super::{Store, StoreError};
use crate::hierarchy::{HierarchyMove, ParentEntry};
use crate::ledger::{Applied, Op};
use serialine_core::Serial;

fn pack_op(parent: &Serial, children: &[Serial]) -> Op {
    Op::Pack {
        parent: parent.clone(),
        children: children.to_vec(),
    }
}

fn unpack_op(parent: &Serial, children: Option<&[Serial]>) -> Op {
    Op::Unpack {
        parent: parent.clone(),
        children: children.map(<[Serial]>::to_vec),
    }
}

impl Store {
    /// Packs `children` (committed units, or parents) into `parent`, whose
    /// label was verified (committed): all of them or, with the reason for
    /// each offending child, none. Durable on return; the pack goes
    /// upstream through the outbox.
    pub async fn pack(
        &self,
        parent: &Serial,
        children: &[Serial],
    ) -> Result<HierarchyMove, StoreError> {
        self.parent_of_another_product(parent, children)?;
        self.expect_move(self.submit_one(pack_op(parent, children)).await?)
    }

    pub fn pack_blocking(
        &self,
        parent: &Serial,
        children: &[Serial],
    ) -> Result<HierarchyMove, StoreError> {
        self.parent_of_another_product(parent, children)?;
        self.expect_move(self.submit_one_blocking(pack_op(parent, children))?)
    }

    /// A parent is a case (or pallet) label, issued for its own product:
    /// never a unit of the product it would hold. Read from the blocks'
    /// authenticated content (a serial's product never changes, so the
    /// check needs no batch); serials without a record are left to the
    /// ledger's refusal.
    fn parent_of_another_product(
        &self,
        parent: &Serial,
        children: &[Serial],
    ) -> Result<(), StoreError> {
        let product = |s: &Serial| -> Result<Option<serialine_core::Gtin>, StoreError> {
            match self.entry(s)? {
                crate::SerialEntry::Recorded(r) => Ok(self.block_gtin(r.block_id).ok()),
                _ => Ok(None),
            }
        };
        let Some(own) = product(parent)? else {
            return Ok(());
        };
        let mut same = Vec::new();
        for c in children {
            if product(c)? == Some(own) {
                same.push((c.clone(), format!("of the parent's own product {own}")));
            }
        }
        if same.is_empty() {
            return Ok(());
        }
        same.truncate(100);
        Err(StoreError::HierarchyRefused {
            parent: parent.clone(),
            why: format!(
                "it is a serial of GTIN {own}, not a case or pallet label of another product; nothing packed"
            ),
            offending: same,
        })
    }

    /// The line's aggregation: commits `parent`'s label, which its scanner
    /// verified (it was `Sent` to the label printer), and packs `children`
    /// into it, in one batch: all of it, or (a child refused, the label not
    /// in flight) nothing. `expected`: how many a full parent of its level
    /// holds; sealed with fewer, it is a partial case.
    pub async fn seal_parent(
        &self,
        parent: &Serial,
        children: &[Serial],
        expected: u32,
    ) -> Result<HierarchyMove, StoreError> {
        self.parent_of_another_product(parent, children)?;
        let op = Op::SealParent {
            parent: parent.clone(),
            children: children.to_vec(),
            expected,
        };
        self.expect_move(self.submit_one(op).await?)
    }

    /// Why each of `children` could not go into a parent of job `job` now
    /// (empty: all could): the check the line makes before it prints a
    /// parent's label, by the same rule the ledger applies when it packs.
    /// Named twice is a reason too.
    pub fn unfit_children(
        &self,
        job: u32,
        children: &[Serial],
    ) -> Result<Vec<(Serial, String)>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for c in children {
            if !seen.insert(c) {
                out.push((c.clone(), "named twice".to_string()));
                continue;
            }
            let (record, issued) = match self.entry(c)? {
                crate::SerialEntry::NotIssued => (None, false),
                crate::SerialEntry::Available { .. } => (None, true),
                crate::SerialEntry::Recorded(r) => (Some(r), true),
            };
            let parent = match &record {
                Some(_) => self.parent_of(c)?,
                None => None,
            };
            if let Some(why) =
                crate::ledger::unfit_reason(record.as_ref(), issued, parent.as_ref(), job)
            {
                out.push((c.clone(), why));
            }
        }
        Ok(out)
    }

    /// Takes `children` out of `parent` (rework), or with `None` empties it
    /// for good: its code is never packed again.
    pub async fn unpack(
        &self,
        parent: &Serial,
        children: Option<&[Serial]>,
    ) -> Result<HierarchyMove, StoreError> {
        self.expect_move(self.submit_one(unpack_op(parent, children)).await?)
    }

    pub fn unpack_blocking(
        &self,
        parent: &Serial,
        children: Option<&[Serial]>,
    ) -> Result<HierarchyMove, StoreError> {
        self.expect_move(self.submit_one_blocking(unpack_op(parent, children))?)
    }

    /// Decommissions `root` (`to`, a decommissioning) with everything
    /// packed below it, in one batch, all or none (`--with-children`).
    /// Returns how many serials moved, the root included.
    pub fn decommission_tree_blocking(
        &self,
        root: &Serial,
        to: serialine_core::UnitState,
    ) -> Result<u32, StoreError> {
        let op = Op::DecommissionTree {
            root: root.clone(),
            to,
        };
        self.expect_move(self.submit_one_blocking(op)?)
            .map(|m| m.children + 1)
    }

    /// The parent `child` is packed in, if any.
    pub fn parent_of(&self, child: &Serial) -> Result<Option<Serial>, StoreError> {
        self.read(|r| r.parent_of(child))
    }

    /// `parent`'s entry and what it holds now (none: never a parent).
    pub fn contents(
        &self,
        parent: &Serial,
    ) -> Result<Option<(ParentEntry, Vec<Serial>)>, StoreError> {
        self.read(|r| r.contents(parent))
    }

    /// Every parent, in serial order.
    pub fn parents(&self) -> Result<Vec<(Serial, ParentEntry)>, StoreError> {
        self.read(|r| r.parents())
    }

    fn expect_move(&self, a: Applied) -> Result<HierarchyMove, StoreError> {
        match a {
            Applied::Hierarchy(m) => Ok(m),
            other => Err(self.unexpected(other)),
        }
    }
}
