//! The shadow merge/delta engine (`shadowsync::shadow`) against a model of AWS's rules.
//!
//! Each input is a sequence of updates (well-formed and malformed, and raw bytes),
//! deletes, clock jumps and self-merges on one shadow, under limits drawn from the input;
//! `tests/invariants/shadow.rs` says what is checked after each step.

#![no_main]

#[path = "common.rs"]
mod common;
#[path = "../../invariants/mod.rs"]
mod invariants;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shadowsync::dataplane::ShadowLimits;
use shadowsync::shadow::{ShadowRecord, TOMBSTONE_RETENTION_SECS};

use common::{PATCH, STORED};
use invariants::shadow::{
    base_version, check_delete, check_raw, check_self_merge, check_update, UpdateParts,
};

const T0: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let limits = ShadowLimits {
        max_document_bytes: *u.choose(&[48, 128, 400, 8 * 1024])?,
        max_depth: u.int_in_range(1..=7)?,
        max_payload_bytes: 128 * 1024,
    };
    let mut record = ShadowRecord::absent();
    let mut now = T0;
    for _ in 0..u.int_in_range(1..=12)? {
        record = match u.int_in_range(0..=9)? {
            0 => {
                let len = u.int_in_range(0..=200usize)?.min(u.len());
                check_raw(&record, u.bytes(len)?, &limits, now)
            }
            1 => check_delete(&record, now),
            2 => {
                now += u.int_in_range(0..=TOMBSTONE_RETENTION_SECS + 10)?;
                record
            }
            3 => {
                check_self_merge(&record, &common::object(u, 3, PATCH)?);
                record
            }
            _ => {
                let parts = update(u, &record, &limits, now)?;
                check_update(&record, &parts, &limits, now)
            }
        };
    }
    Ok(())
}

fn section(u: &mut Unstructured<'_>, limits: &ShadowLimits) -> Result<Option<Value>> {
    // One level more than allowed, so that the depth limit is met from both sides.
    let depth = limits.max_depth + 1;
    Ok(match u.int_in_range(0..=9)? {
        0..=2 => None,
        3 => Some(Value::Null),
        4 => Some(common::value(u, 2, STORED)?),
        5 => {
            let shape = common::Shape {
                nulls: true,
                nulls_in_arrays: true,
            };
            Some(Value::Object(common::object(u, depth, shape)?))
        }
        _ => Some(Value::Object(common::object(u, depth, PATCH)?)),
    })
}

fn update(
    u: &mut Unstructured<'_>,
    record: &ShadowRecord,
    limits: &ShadowLimits,
    now: i64,
) -> Result<UpdateParts> {
    let base = base_version(record, now);
    let desired = section(u, limits)?;
    let reported = section(u, limits)?;
    let version = match u.int_in_range(0..=5)? {
        0 | 1 => None,
        2 => Some(Value::from(base)),
        3 => Some(Value::from(base.wrapping_add(1))),
        4 => Some(Value::from(u64::from(u16::arbitrary(u)?))),
        _ => Some(common::value(u, 0, STORED)?),
    };
    let client_token = match u.int_in_range(0..=3)? {
        0 | 1 => None,
        2 => {
            let len = u.int_in_range(60..=70usize)?;
            Some(Value::String("t".repeat(len)))
        }
        _ => Some(common::value(u, 0, STORED)?),
    };
    Ok(UpdateParts {
        desired,
        reported,
        version,
        client_token,
        stray_delta: u.ratio(1, 12)?,
    })
}
