//! The commands that change something: each asks placement for an operator; with `--wait` it polls
//! placement until that operator ends, fails unless it succeeded, and then waits for what the
//! command promises to be visible (a split's two halves).

use std::time::{Duration, Instant};

use serde_json::json;

use super::client::PlacementConn;
use super::render::{
    operator_json, operator_state_name, pretty, region_json, render_regions, steps_text, store_json, took,
};
use super::shared::{now_ms, parse_key, print, CtlError, Output};
use crate::proto::{OperatorInfo, OperatorState, RegionInfo, StoreState};
use crate::storage::keys::display as display_key;

/// How often `--wait` asks placement again.
const POLL: Duration = Duration::from_millis(100);

/// One placement call of a `--wait` poll. It gets only the time left, so `--wait-timeout` bounds
/// the whole command (alone, each call may look for the placement leader for `--placement-timeout`,
/// and a poll that began just before the deadline would run that much past it). `Ok(None)`: the
/// deadline passed, or placement could not be reached, which a wait rides out (its leader may be
/// changing) by asking again while time is left.
async fn poll<T>(
    deadline: Instant,
    call: impl std::future::Future<Output = Result<T, CtlError>>,
) -> Result<Option<T>, CtlError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, call).await {
        Ok(Ok(answer)) => Ok(Some(answer)),
        Ok(Err(CtlError::PlacementUnreachable { .. })) | Err(_) => Ok(None),
        Ok(Err(err)) => Err(err),
    }
}

/// `region transfer-leader`: with a wait, until the operator has seen the store leading the region.
pub(super) async fn transfer_leader(
    placement: &PlacementConn,
    region_id: u64,
    store_id: u64,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let operator = placement.transfer_leader(region_id, store_id).await?;
    let Some(waited) = wait else {
        return print(&match output {
            Output::Json => pretty(&json!({
                "region_id": region_id,
                "to_store_id": store_id,
                "requested": true,
                "leader_store_id": null,
                "operator": operator_json(&operator, now_ms()),
            })),
            Output::Table => format!(
                "leader transfer of region {region_id} to store {store_id} requested (operator {}); its leader carries it out\n",
                operator.operator_id
            ),
        });
    };
    let done = wait_operator(placement, operator, Instant::now() + waited, waited).await?;
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "to_store_id": store_id,
            "requested": true,
            "leader_store_id": store_id,
            "operator": operator_json(&done, now_ms()),
        })),
        Output::Table => format!("region {region_id} is now led by store {store_id}\n"),
    })
}

/// `region split`: with a wait, until the split's operator has succeeded and both halves are known
/// to placement (so a `region list` right after shows no hole).
pub(super) async fn split(
    placement: &PlacementConn,
    region_id: u64,
    key: Option<&str>,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let split_key = key.map(parse_key).transpose()?.unwrap_or_default();
    let operator = placement.split(region_id, split_key.clone()).await?;
    let at = if split_key.is_empty() { "in the middle".to_string() } else { format!("at {}", display_key(&split_key)) };
    let Some(waited) = wait else {
        return print(&match output {
            Output::Json => pretty(&json!({
                "region_id": region_id,
                "split_key": display_key(&split_key),
                "requested": true,
                "operator": operator_json(&operator, now_ms()),
            })),
            Output::Table => format!(
                "split of region {region_id} {at} requested (operator {}); its leader carries it out\n",
                operator.operator_id
            ),
        });
    };
    let deadline = Instant::now() + waited;
    let done = wait_operator(placement, operator, deadline, waited).await?;
    let halves = loop {
        if let Some(Some(halves)) = poll(deadline, split_halves(placement, region_id)).await? {
            break halves;
        }
        if Instant::now() >= deadline {
            return Err(CtlError::HalfUnknown { region_id, waited });
        }
        tokio::time::sleep(POLL).await;
    };
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "split_key": display_key(&split_key),
            "requested": true,
            "regions": halves.iter().map(region_json).collect::<Vec<_>>(),
            "operator": operator_json(&done, now_ms()),
        })),
        Output::Table => format!("region {region_id} split {at}\n{}", render_regions(&halves, Output::Table)),
    })
}

/// The left half (the region, which kept its id) and the region starting where it now ends, once
/// placement knows both.
async fn split_halves(placement: &PlacementConn, region_id: u64) -> Result<Option<Vec<RegionInfo>>, CtlError> {
    let left = placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?;
    let end = left.region.as_ref().map(|r| r.end_key.clone()).unwrap_or_default();
    // A split always leaves the left half with an end; none means it is not done as placement sees it.
    if end.is_empty() {
        return Ok(None);
    }
    let right = placement.region_by_key(end.clone()).await?;
    Ok(right.filter(|r| r.region.as_ref().is_some_and(|r| r.start_key == end)).map(|right| vec![left, right]))
}

/// Polls placement until `operator` ends (by `deadline`); its final state, or why it failed:
/// `timeout`, `cancelled` or `replaced` fail the command with the operator's note.
async fn wait_operator(
    placement: &PlacementConn,
    operator: OperatorInfo,
    deadline: Instant,
    waited: Duration,
) -> Result<OperatorInfo, CtlError> {
    let (operator_id, region_id) = (operator.operator_id, operator.region_id);
    let done = loop {
        if let Some((running, history)) = poll(deadline, placement.operators()).await? {
            if let Some(done) = history.into_iter().rev().find(|op| op.operator_id == operator_id) {
                break done;
            }
            if !running.iter().any(|op| op.operator_id == operator_id) {
                return Err(CtlError::OperatorLost { operator_id, region_id });
            }
        }
        if Instant::now() >= deadline {
            return Err(CtlError::OperatorTimeout { operator_id, region_id, waited });
        }
        tokio::time::sleep(POLL).await;
    };
    if done.state != OperatorState::Success as i32 {
        return Err(CtlError::OperatorFailed {
            operator_id,
            region_id,
            state: operator_state_name(done.state).to_string(),
            note: done.note,
        });
    }
    Ok(done)
}

/// Prints the operator placement made for a request (`region add-peer`, `region remove-peer`); with
/// a wait, once it has succeeded.
pub(super) async fn finish_operator(
    placement: &PlacementConn,
    operator: OperatorInfo,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let Some(waited) = wait else {
        return print(&match output {
            Output::Json => pretty(&operator_json(&operator, now_ms())),
            Output::Table => format!(
                "operator {} created for region {}: {}\n",
                operator.operator_id,
                operator.region_id,
                steps_text(&operator)
            ),
        });
    };
    let done = wait_operator(placement, operator, Instant::now() + waited, waited).await?;
    print(&match output {
        Output::Json => pretty(&operator_json(&done, now_ms())),
        Output::Table => format!(
            "operator {} on region {} finished in {}: {}\n",
            done.operator_id,
            done.region_id,
            took(&done, now_ms()),
            steps_text(&done)
        ),
    })
}

/// `store remove`: marks the store offline; with a wait, polls until placement marks it removed.
pub(super) async fn remove_store(
    placement: &PlacementConn,
    store_id: u64,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let mut store = placement.remove_store(store_id).await?;
    if let Some(waited) = wait {
        let deadline = Instant::now() + waited;
        while store.state != StoreState::Removed as i32 {
            if Instant::now() >= deadline {
                return Err(CtlError::DrainTimeout { store_id, region_count: store.region_count, waited });
            }
            tokio::time::sleep(POLL).await;
            if let Some(stores) = poll(deadline, placement.stores()).await? {
                store = stores.into_iter().find(|s| s.store_id == store_id).ok_or(CtlError::NoSuchStore(store_id))?;
            }
        }
    }
    print(&match output {
        Output::Json => pretty(&store_json(&store, now_ms())),
        Output::Table if store.state == StoreState::Removed as i32 => {
            format!("store {store_id} is removed: it holds no replica and may not rejoin\n")
        }
        Output::Table => format!(
            "store {store_id} is offline: its {} regions are moving to other stores; it is removed once empty\n",
            store.region_count
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A placement call that would run past `--wait-timeout` is cut at it: the wait then ends with
    /// its own timeout error instead of running `--placement-timeout` longer.
    #[tokio::test]
    async fn a_poll_ends_at_the_wait_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let never = std::future::pending::<Result<(), CtlError>>();
        let polled = tokio::time::timeout(Duration::from_secs(10), poll(deadline, never)).await;
        assert!(matches!(polled, Ok(Ok(None))), "the poll outlived its deadline");
    }

    #[tokio::test]
    async fn a_poll_rides_out_an_unreachable_placement_and_keeps_other_errors() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let unreachable =
            async { Err::<(), _>(CtlError::PlacementUnreachable { addr: "a".into(), reason: "down".into() }) };
        assert!(matches!(poll(deadline, unreachable).await, Ok(None)));
        let refused = async { Err::<(), _>(CtlError::NoSuchRegion(7)) };
        assert!(matches!(poll(deadline, refused).await, Err(CtlError::NoSuchRegion(7))));
        assert!(matches!(poll(deadline, async { Ok::<_, CtlError>(3) }).await, Ok(Some(3))));
    }
}
