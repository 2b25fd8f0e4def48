//! Node ids and Raft ids. raft-rs reserves Raft id 0 (its "no node"),
//! while a Kafka cluster's first node is usually node 0. Every other node
//! id is its own Raft id, so Raft logs and snapshots written before node 0
//! was allowed read the same; node 0 takes [`NODE_ZERO_RAFT_ID`], which is
//! above every node id (node ids are non-negative `i32`s).

/// The Raft id of node 0.
pub const NODE_ZERO_RAFT_ID: u64 = 1 << 32;

/// The Raft id of a node; `node_id` must not be negative.
pub fn raft_id(node_id: i32) -> u64 {
    match node_id {
        0 => NODE_ZERO_RAFT_ID,
        id => u64::try_from(id).unwrap_or(u64::MAX),
    }
}

/// The node a Raft id stands for, -1 for none.
pub fn node_id(raft_id: u64) -> i32 {
    match raft_id {
        NODE_ZERO_RAFT_ID => 0,
        id => i32::try_from(id).ok().filter(|id| *id > 0).unwrap_or(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_maps_to_a_raft_id_and_back_and_none_to_zero() {
        for node in [0, 1, 2, 3, 1000, i32::MAX] {
            let raft = raft_id(node);
            assert_ne!(raft, raft::INVALID_ID, "node {node}");
            assert_eq!(node_id(raft), node);
        }
        assert_eq!(raft_id(7), 7, "ids other than 0 are unchanged");
        assert_eq!(node_id(raft::INVALID_ID), -1);
    }
}
