//! The commands that change something: they ask placement, and with `--wait` poll it until the
//! change shows or their operator ends.

use super::*;

/// `region transfer-leader`: asks placement; with `wait`, polls until placement sees the new leader.
pub(super) async fn transfer_leader(
    placement: &PlacementConn,
    region_id: u64,
    store_id: u64,
    wait: bool,
    output: Output,
) -> Result<(), CtlError> {
    placement.transfer_leader(region_id, store_id).await?;
    let mut leader_store_id = 0;
    if wait {
        let deadline = Instant::now() + SPLIT_WAIT;
        loop {
            let info = placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?;
            leader_store_id = info.leader_store_id;
            if leader_store_id == store_id {
                break;
            }
            if Instant::now() >= deadline {
                return Err(CtlError::TransferTimeout { region_id, waited: SPLIT_WAIT, leader_store_id });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "to_store_id": store_id,
            "requested": true,
            "leader_store_id": wait.then_some(leader_store_id),
        })),
        Output::Table if wait => format!("region {region_id} is now led by store {store_id}\n"),
        Output::Table => {
            format!("leader transfer of region {region_id} to store {store_id} requested; its leader carries it out\n")
        }
    })
}

pub(super) async fn split(
    placement: &PlacementConn,
    region_id: u64,
    key: Option<&str>,
    wait: bool,
    output: Output,
) -> Result<(), CtlError> {
    let split_key = key.map(parse_key).transpose()?.unwrap_or_default();
    // The epoch before the request, to tell when the split has happened.
    let before = match wait {
        true => Some(placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?),
        false => None,
    };
    placement.split(region_id, split_key.clone()).await?;
    let at = if split_key.is_empty() { "in the middle".to_string() } else { format!("at {}", display_key(&split_key)) };
    let Some(before) = before else {
        return print(&match output {
            Output::Json => pretty(&json!({
                "region_id": region_id,
                "split_key": display_key(&split_key),
                "requested": true,
            })),
            Output::Table => format!("split of region {region_id} {at} requested; its leader carries it out\n"),
        });
    };
    let version = |info: &RegionInfo| info.region.as_ref().and_then(|r| r.epoch).unwrap_or_default().version;
    let old_version = version(&before);
    let deadline = Instant::now() + SPLIT_WAIT;
    let left = loop {
        // A region that vanished was replaced by newer ones: its split is done too.
        match placement.region(region_id).await? {
            Some(now) if version(&now) == old_version => {}
            Some(now) => break Some(now),
            None => break None,
        }
        if Instant::now() >= deadline {
            return Err(CtlError::SplitTimeout { region_id, waited: SPLIT_WAIT, version: old_version });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The right part starts where the left one now ends.
    let right = match left.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.end_key.clone()) {
        Some(end) if !end.is_empty() => placement.region_by_key(end).await?,
        _ => None,
    };
    let parts: Vec<RegionInfo> = left.into_iter().chain(right).collect();
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "split_key": display_key(&split_key),
            "requested": true,
            "regions": parts.iter().map(region_json).collect::<Vec<_>>(),
        })),
        Output::Table => format!("region {region_id} split {at}\n{}", render_regions(&parts, Output::Table)),
    })
}

/// Prints the operator placement made for a request; with a wait, polls until it finishes first and
/// fails unless it succeeded.
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
    let deadline = Instant::now() + waited;
    let (operator_id, region_id) = (operator.operator_id, operator.region_id);
    let done = loop {
        let (running, history) = placement.operators().await?;
        if let Some(done) = history.into_iter().rev().find(|op| op.operator_id == operator_id) {
            break done;
        }
        if !running.iter().any(|op| op.operator_id == operator_id) {
            return Err(CtlError::OperatorLost { operator_id, region_id });
        }
        if Instant::now() >= deadline {
            return Err(CtlError::OperatorTimeout { operator_id, region_id, waited });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if done.state != OperatorState::Success as i32 {
        return Err(CtlError::OperatorFailed {
            operator_id,
            region_id,
            state: operator_state_name(done.state).to_string(),
            note: done.note,
        });
    }
    print(&match output {
        Output::Json => pretty(&operator_json(&done, now_ms())),
        Output::Table => format!(
            "operator {operator_id} on region {region_id} finished in {}: {}\n",
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
            tokio::time::sleep(Duration::from_millis(200)).await;
            store = placement
                .stores()
                .await?
                .into_iter()
                .find(|s| s.store_id == store_id)
                .ok_or(CtlError::NoSuchStore(store_id))?;
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
