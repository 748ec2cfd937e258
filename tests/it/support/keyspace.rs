//! Plain Redis reads of the keyspace, to check what okome wrote: values,
//! TTLs, whole-keyspace snapshots, the server's clock.

use redis::Connection;
use std::collections::BTreeMap;

/// The lock key of `key`.
pub fn lock_of(key: &str) -> String {
    format!("{key}:lock")
}

/// `GET key`.
pub fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).expect("GET")
}

/// `PTTL key`: ms left, -1 without a TTL, -2 for no key.
pub fn pttl(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(c).expect("PTTL")
}

/// `PEXPIRETIME key`: the absolute expiry, Unix ms.
pub fn pexpiretime(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query(c)
        .expect("PEXPIRETIME")
}

/// Whether `key` exists.
pub fn exists(c: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(c)
        .expect("EXISTS")
        == 1
}

/// Every key, sorted.
pub fn keys(c: &mut Connection) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(c).expect("KEYS");
    k.sort();
    k
}

/// `DUMP key` (panics if the key is gone).
pub fn dump(c: &mut Connection, key: &str) -> Vec<u8> {
    let d: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query(c).expect("DUMP");
    d.unwrap_or_else(|| panic!("DUMP {key}: key vanished"))
}

/// Every key with its `DUMP` and `PTTL`.
pub fn dumps_ttl(c: &mut Connection) -> BTreeMap<String, (Vec<u8>, i64)> {
    dumps_with(c, pttl)
}

/// Every key with its `DUMP` and absolute expiry (`PEXPIRETIME`).
pub fn dumps_at(c: &mut Connection) -> BTreeMap<String, (Vec<u8>, i64)> {
    dumps_with(c, pexpiretime)
}

fn dumps_with(
    c: &mut Connection,
    expiry: fn(&mut Connection, &str) -> i64,
) -> BTreeMap<String, (Vec<u8>, i64)> {
    keys(c)
        .into_iter()
        .map(|k| {
            let d = dump(c, &k);
            let e = expiry(c, &k);
            (k, (d, e))
        })
        .collect()
}

/// Every key in the server with its type, sorted: to assert "nothing written".
pub fn snapshot(con: &mut Connection) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query(con).expect("DUMP");
        let ttl_bucket: i64 = redis::cmd("PTTL").arg(&k).query(con).expect("PTTL");
        // TTLs tick; keep only whether there is one.
        out.push((k, dump.unwrap_or_default(), ttl_bucket.signum()));
    }
    out.sort();
    out
}

/// The server's clock (`TIME`), Unix ms.
pub fn server_ms(c: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(c).expect("TIME");
    s * 1000 + us / 1000
}

/// This machine's clock, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `DBSIZE`.
pub fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).expect("DBSIZE")
}
