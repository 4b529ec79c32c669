//! botburrow-coordinator: leader election, Hub polling, discovery scheduling, the lease reaper,
//! queue statistics and the coordinator's HTTP endpoints (design §5).

pub mod election;
