//! Running a command given as its words: its reply, or its error text as
//! the server sent it; and okome's commands with their typed replies.

use redis::{Connection, FromRedisValue, Value};

/// A command from its words, the first being its name (text or bytes).
pub fn command<A: AsRef<[u8]>>(args: &[A]) -> redis::Cmd {
    let (name, rest) = args.split_first().expect("a command");
    let mut c = redis::cmd(std::str::from_utf8(name.as_ref()).expect("utf8 command name"));
    for a in rest {
        c.arg(a.as_ref());
    }
    c
}

/// A command's words for assertion messages, each quoted, a long one
/// shortened to its first 60 bytes.
pub fn show<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            let s = String::from_utf8_lossy(&a[..a.len().min(60)]).into_owned();
            if a.len() > 60 {
                format!("{s:?}...({} bytes)", a.len())
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command: its reply, or its error text as the server sent it.
pub fn call(c: &mut Connection, args: &[&str]) -> Result<Value, String> {
    command(args).query::<Value>(c).map_err(|e| error_text(&e))
}

/// Runs a command that must succeed (panics with its error otherwise).
pub fn must(c: &mut Connection, args: &[&str]) -> Value {
    call(c, args).unwrap_or_else(|e| panic!("{}: {e}", show(args)))
}

/// Runs a command whose reply must be `OK` (as a string): `Err` with what
/// it replied instead, or its error.
pub fn try_ok(c: &mut Connection, args: &[&str]) -> Result<(), String> {
    match command(args).query::<String>(c) {
        Ok(s) if s == "OK" => Ok(()),
        Ok(s) => Err(format!("{}: {s}", show(args))),
        Err(e) => Err(format!("{}: {}", show(args), error_text(&e))),
    }
}

/// [`try_ok`] that panics on anything but `OK`.
pub fn ok(c: &mut Connection, args: &[&str]) {
    try_ok(c, args).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs a command and returns its error text (panics if it succeeded).
pub fn err(c: &mut Connection, args: &[&[u8]]) -> String {
    match command(args).query::<Value>(c) {
        Ok(v) => panic!(
            "expected an error from {:?}, got {v:?}",
            String::from_utf8_lossy(args[0])
        ),
        Err(e) => error_text(&e),
    }
}

/// The full error text as the server sent it (`ERR ...`, `WRONGTYPE ...`).
pub fn error_text(e: &redis::RedisError) -> String {
    let code = e.code().unwrap_or("");
    let detail = e.detail().unwrap_or("");
    if code.is_empty() {
        e.to_string()
    } else {
        format!("{code} {detail}")
    }
}

// ------------------------------------------------------- okome's commands

/// The reply of `OKOME.PLAN.SET`: status, the plan's TTL in ms (nil when
/// skipped), the write budget left (nil without `AGENT`), whether the lock
/// was released (1/0).
pub type SetReply = (String, Option<i64>, Option<i64>, i64);

/// [`SetReply`] of a plan that must be stored: a nil TTL (`SKIPPED`) fails
/// the call.
pub type StoredReply = (String, i64, Option<i64>, i64);

/// `OKOME.PLAN.SET args...`.
pub fn plan_set(c: &mut Connection, args: &[&str]) -> SetReply {
    plan_set_as(c, args)
}

/// `OKOME.PLAN.SET args...` of a plan that must be stored.
pub fn plan_store(c: &mut Connection, args: &[&str]) -> StoredReply {
    plan_set_as(c, args)
}

fn plan_set_as<T: FromRedisValue>(c: &mut Connection, args: &[&str]) -> T {
    redis::cmd("OKOME.PLAN.SET")
        .arg(args)
        .query(c)
        .expect("OKOME.PLAN.SET")
}

/// `OKOME.CACHE.SET args...`: the TTL given, in ms.
pub fn cache_set(c: &mut Connection, args: &[&str]) -> i64 {
    redis::cmd("OKOME.CACHE.SET")
        .arg(args)
        .query(c)
        .expect("OKOME.CACHE.SET")
}

/// `OKOME.LOCK args...`: a token, nil, or 1/0 when extending.
pub fn lock(c: &mut Connection, args: &[&str]) -> Value {
    lock_as(c, args)
}

/// `OKOME.LOCK key opts...` to acquire: the token, or `None` when held.
pub fn acquire(c: &mut Connection, key: &str, opts: &[&str]) -> Option<String> {
    lock_as(c, &[&[key][..], opts].concat())
}

/// `OKOME.LOCK key TOKEN token opts...` to extend: 1 or 0.
pub fn extend(c: &mut Connection, key: &str, token: &str, opts: &[&str]) -> i64 {
    lock_as(c, &[&[key, "TOKEN", token][..], opts].concat())
}

fn lock_as<T: FromRedisValue>(c: &mut Connection, args: &[&str]) -> T {
    redis::cmd("OKOME.LOCK")
        .arg(args)
        .query(c)
        .expect("OKOME.LOCK")
}

/// `OKOME.UNLOCK key token`: 1 if released, else 0.
pub fn unlock(c: &mut Connection, key: &str, token: &str) -> i64 {
    redis::cmd("OKOME.UNLOCK")
        .arg(key)
        .arg(token)
        .query(c)
        .expect("OKOME.UNLOCK")
}

/// `OKOME.KEY kind parts...`.
pub fn okome_key(c: &mut Connection, kind: &str, parts: &[&str]) -> String {
    redis::cmd("OKOME.KEY")
        .arg(kind)
        .arg(parts)
        .query(c)
        .expect("OKOME.KEY")
}

// ------------------------------------------------------- reading a reply

/// The text of a bulk or status reply.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("expected a string, got {other:?}"),
    }
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

pub fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The texts of an array reply.
pub fn strings(v: &Value) -> Vec<String> {
    array(v).iter().map(text).collect()
}

/// A RESP2 flat key/value array (or a RESP3 map) as an ordered list.
pub fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(a) => {
            assert_eq!(a.len() % 2, 0, "a flat map has pairs: {a:?}");
            a.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

/// The value of `name` in [`pairs`].
pub fn field<'a>(m: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The words as owned strings.
pub fn to_strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
