//! Which allocations Nomad stops when a group's count drops, so that the provider can take
//! them out of rotation and let their requests finish *before* it calls scale.
//!
//! Nomad's rule, read from its scheduler (hashicorp/nomad):
//! - `scheduler/reconcile.go`, `computeStop`: when a group has more non-terminal allocations
//!   than its `Count` (`remove = len(untainted) + len(migrate) - Count`), terminal ones are
//!   filtered out (`filterByTerminal`) and, after lost, canary and migrating allocations,
//!   "Select the allocs with the highest count to remove": `nameIndex.Highest(remove)`, then
//!   every untainted allocation whose name is in that set is stopped.
//! - `scheduler/generic/alloc/index.go`, `NameIndex.Highest`: walks the bitmap of name indexes
//!   in use from the top and returns the names `<job>.<group>[<index>]` of the `n` highest
//!   indexes set (gaps are skipped, duplicates count once).
//! - `nomad/structs/structs.go`, `AllocIndexFromName`: the index is the text between
//!   `len(job) + len(group) + 2` and the last byte (`]`), parsed as an integer, 0 when that
//!   fails; so job or group names holding dots or brackets are read right. [`name_index`]
//!   does the same.
//!
//! Where the prediction may be wider than Nomad's choice, it errs on the side of the request:
//! when several live allocations share one of the chosen names (a replacement racing the
//! scale), Nomad stops some of them in Go map order, so all of them are picked. Allocations
//! Nomad prefers for other reasons (on a lost or draining node, unpromoted canaries) are not
//! known from the allocation list; the provider checks after the scale call which picked
//! allocations Nomad kept running and puts those back in rotation.

use std::collections::BTreeSet;

use crate::client::wire::nomad::Allocation;

/// The allocations of `group` in `job_id` that Nomad stops when the group's count becomes
/// `count`, highest name index first; empty when nothing is stopped.
pub(crate) fn allocs_to_stop<'a>(
    allocs: &'a [Allocation],
    job_id: &str,
    group: &str,
    count: u64,
) -> Vec<&'a Allocation> {
    let live: Vec<(u64, &Allocation)> = allocs
        .iter()
        .filter(|a| a.job_id == job_id && a.task_group == group && !a.is_terminal())
        .map(|a| (name_index(&a.name, job_id, group), a))
        .collect();
    let remove = (live.len() as u64).saturating_sub(count);
    if remove == 0 {
        return Vec::new();
    }
    let indexes: BTreeSet<u64> = live.iter().map(|(i, _)| *i).collect();
    let highest: BTreeSet<u64> = indexes
        .into_iter()
        .rev()
        .take(usize::try_from(remove).unwrap_or(usize::MAX))
        .collect();
    let mut stop: Vec<(u64, &Allocation)> = live
        .into_iter()
        .filter(|(i, _)| highest.contains(i))
        .collect();
    stop.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    stop.into_iter().map(|(_, a)| a).collect()
}

/// The index of an allocation named `<job>.<group>[<index>]`, read as Nomad's
/// `AllocIndexFromName` reads it (by length, not by searching for brackets); 0 when absent.
pub(crate) fn name_index(name: &str, job_id: &str, group: &str) -> u64 {
    let prefix = job_id.len() + group.len() + 2;
    if name.len() <= 3 || name.len() <= prefix {
        return 0;
    }
    name.get(prefix..name.len() - 1)
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(
        id: &str,
        job: &str,
        group: &str,
        index: &str,
        desired: &str,
        client: &str,
    ) -> Allocation {
        Allocation {
            id: id.into(),
            name: format!("{job}.{group}[{index}]"),
            job_id: job.into(),
            task_group: group.into(),
            desired_status: desired.into(),
            client_status: client.into(),
            ..Default::default()
        }
    }

    fn ids(v: Vec<&Allocation>) -> Vec<&str> {
        v.into_iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn highest_indexes_go_first_across_gaps() {
        let j = "faasgate-echo.openfaas-fn";
        let allocs = vec![
            alloc("a0", j, "fn", "0", "run", "running"),
            alloc("a2", j, "fn", "2", "run", "running"),
            alloc("a7", j, "fn", "7", "run", "pending"),
            alloc("a11", j, "fn", "11", "run", "running"),
        ];
        // 11 sorts below 2 as text: indexes are numbers.
        assert_eq!(ids(allocs_to_stop(&allocs, j, "fn", 2)), ["a11", "a7"]);
        assert_eq!(ids(allocs_to_stop(&allocs, j, "fn", 3)), ["a11"]);
        assert!(allocs_to_stop(&allocs, j, "fn", 4).is_empty());
        assert!(allocs_to_stop(&allocs, j, "fn", 9).is_empty());
        assert_eq!(
            ids(allocs_to_stop(&allocs, j, "fn", 0)),
            ["a11", "a7", "a2", "a0"]
        );
    }

    #[test]
    fn terminal_allocations_and_other_groups_are_ignored() {
        let j = "job";
        let allocs = vec![
            alloc("a0", j, "fn", "0", "run", "running"),
            alloc("a1", j, "fn", "1", "run", "running"),
            // Terminal: already stopping, or done on the client. They neither count towards
            // `remove` nor get picked, though their indexes are the highest.
            alloc("s5", j, "fn", "5", "stop", "running"),
            alloc("e6", j, "fn", "6", "evict", "running"),
            alloc("c7", j, "fn", "7", "run", "complete"),
            alloc("f8", j, "fn", "8", "run", "failed"),
            alloc("l9", j, "fn", "9", "run", "lost"),
            alloc("o9", j, "other", "9", "run", "running"),
            alloc("x9", "job2", "fn", "9", "run", "running"),
        ];
        assert_eq!(ids(allocs_to_stop(&allocs, j, "fn", 1)), ["a1"]);
        assert!(allocs_to_stop(&allocs, j, "fn", 2).is_empty());
        // A disconnected client's allocation ("unknown") is not terminal.
        let mut allocs = allocs;
        allocs.push(alloc("u3", j, "fn", "3", "run", "unknown"));
        assert_eq!(ids(allocs_to_stop(&allocs, j, "fn", 2)), ["u3"]);
    }

    #[test]
    fn names_are_read_by_length_like_nomad() {
        // Job IDs of functions hold a dot; template-made names may hold brackets too.
        let j = "faasgate-a[1].b.openfaas-fn";
        let g = "fn[2]";
        assert_eq!(name_index(&format!("{j}.{g}[12]"), j, g), 12);
        assert_eq!(name_index(&format!("{j}.{g}[0]"), j, g), 0);
        assert_eq!(name_index("x", j, g), 0);
        assert_eq!(name_index(&format!("{j}.{g}[zz]"), j, g), 0);
        let allocs = vec![
            alloc("a3", j, g, "3", "run", "running"),
            alloc("a10", j, g, "10", "run", "running"),
            alloc("a1", j, g, "1", "run", "running"),
        ];
        assert_eq!(ids(allocs_to_stop(&allocs, j, g, 1)), ["a10", "a3"]);
    }

    #[test]
    fn duplicate_names_are_all_picked() {
        let j = "job";
        let allocs = vec![
            alloc("a0", j, "fn", "0", "run", "running"),
            alloc("a1", j, "fn", "1", "run", "running"),
            alloc("b1", j, "fn", "1", "run", "pending"),
        ];
        // Nomad stops one of the two named [1]; which one is up to Go's map order.
        assert_eq!(ids(allocs_to_stop(&allocs, j, "fn", 2)), ["a1", "b1"]);
    }
}
