//! The tail of declared keys as Redis sees it: okome's command filter
//! appends exactly one tail to every okome call (SLOWLOG shows the argv
//! Redis ran), also to a call Redis reprocesses after `CLIENT PAUSE`
//! (Redis 7.0 runs filters again then), inside `MULTI` and from a script;
//! a tail a client writes itself can add keys to Redis's checks but never
//! hide one.

use crate::support::*;

/// The argv of the last `n` commands in SLOWLOG, oldest first.
fn slowlog(c: &mut redis::Connection, n: usize) -> Vec<Vec<String>> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg(&["GET", &n.to_string()])
        .query(c)
        .unwrap();
    let mut out: Vec<Vec<String>> = entries
        .iter()
        .map(|e| match e {
            redis::Value::Array(fields) => match &fields[3] {
                redis::Value::Array(args) => args
                    .iter()
                    .map(|a| redis::from_redis_value::<String>(a).unwrap())
                    .collect(),
                other => panic!("argv: {other:?}"),
            },
            other => panic!("entry: {other:?}"),
        })
        .collect();
    out.reverse();
    out
}

fn rate_tail(agent: &str) -> Vec<String> {
    to_strings(&[
        "OKOME.R",
        "0",
        "OKOME.W",
        "0",
        "OKOME.RW",
        "1",
        &format!("okome:budget:rate:{{{agent}}}"),
    ])
}

fn server() -> Server {
    Server::start_with(&["--slowlog-log-slower-than", "0", "--slowlog-max-len", "64"])
}

#[test]
fn one_tail_per_call_from_every_path() {
    let s = server();
    let mut c = s.conn();
    let _: redis::Value = redis::cmd("OKOME.RATE")
        .arg(&["a", "5", "60"])
        .query(&mut c)
        .unwrap();
    let mut want = to_strings(&["OKOME.RATE", "a", "5", "60"]);
    want.extend(rate_tail("a"));
    assert_eq!(slowlog(&mut c, 1), vec![want.clone()], "a plain call");

    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("OKOME.RATE")
        .arg(&["a", "5", "60"])
        .query(&mut c)
        .unwrap();
    assert!(
        slowlog(&mut c, 8).contains(&want),
        "inside MULTI: {:?}",
        slowlog(&mut c, 8)
    );

    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let from_script: redis::RedisResult<Vec<i64>> = redis::cmd("EVAL")
        .arg(&["return redis.call('OKOME.RATE', 'a', '5', '60')", "0"])
        .query(&mut c);
    if valkey_version(&mut c).is_some() {
        // Valkey 9's scripting engine gives filters an argv that cannot
        // grow: no tail, and the command refuses itself (fail closed).
        let e = error_text(&from_script.unwrap_err());
        assert!(e.contains("on Valkey 9 it cannot from a script"), "{e}");
    } else {
        assert_eq!(from_script.unwrap()[0], 1, "from a script");
    }

    // A call held by CLIENT PAUSE WRITE is reprocessed when writes resume:
    // still one tail, one charge.
    let peek: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["a", "5", "60", "COST", "0"])
        .query(&mut c)
        .unwrap();
    let left = peek[1];
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "300", "WRITE"])
        .query(&mut c)
        .unwrap();
    let mut held = s.conn();
    let r: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["a", "5", "60"])
        .query(&mut held)
        .unwrap();
    assert_eq!(r[..3], [1, left - 1, 0], "the held call, charged once");
    let logged = slowlog(&mut c, 16);
    assert!(logged.contains(&want), "after the pause: {logged:?}");
    assert!(
        logged
            .iter()
            .all(|argv| argv.iter().filter(|a| *a == "OKOME.R").count() <= 1),
        "one tail per call: {logged:?}"
    );
}

#[test]
fn a_tail_written_by_a_client_never_hides_a_key() {
    let s = server();
    let mut c = s.conn();
    // The right tail, written by hand: the same call.
    let r: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["a", "5", "60"])
        .arg(rate_tail("a"))
        .query(&mut c)
        .unwrap();
    assert_eq!(r[0..2], [1, 4]);
    // A tail naming another key: okome appends the real one after it, and
    // the client's becomes arguments, which the command refuses.
    let before = snapshot(&mut c);
    let mut args: Vec<Vec<u8>> = vec![
        b"OKOME.RATE".to_vec(),
        b"a".to_vec(),
        b"5".to_vec(),
        b"60".to_vec(),
    ];
    args.extend(rate_tail("other").into_iter().map(String::into_bytes));
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let e = err(&mut c, &refs);
    assert!(e.starts_with("ERR syntax error"), "{e}");
    // An empty tail (no keys) on a call that touches one: refused.
    let e = err(
        &mut c,
        &[
            b"OKOME.RATE",
            b"a",
            b"5",
            b"60",
            b"OKOME.R",
            b"0",
            b"OKOME.W",
            b"0",
            b"OKOME.RW",
            b"0",
        ],
    );
    assert!(e.starts_with("ERR syntax error"), "{e}");
    assert_eq!(snapshot(&mut c), before, "nothing written");
}
