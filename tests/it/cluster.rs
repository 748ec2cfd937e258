//! okome on a real 3-primary Redis Cluster on loopback: keys it derives are
//! only ever touched on the node that serves their slot; a plan and its lock
//! share a slot; every key a call touches is declared, so Redis answers
//! MOVED (the argument form of PLAN.GET included) and CROSSSLOT like for
//! built-ins, and the commands work through the redis crate's cluster
//! client.

use crate::support::cluster::Cluster;
use crate::support::errors::CROSSSLOT;
use crate::support::*;

#[test]
fn cluster_routing_end_to_end() {
    let cl = Cluster::start();
    let mut any = cl.nodes[0].conn();
    let key = okome_key(
        &mut any,
        "planner",
        &["llama3:8b", "plan the login page", "v1", "abc123"],
    );
    let slot = cl.slot(&key);
    assert_eq!(
        slot,
        cl.slot(&format!("{key}:lock")),
        "a plan and its lock share a slot"
    );
    let owner = cl.owner(slot);
    let other = (owner + 1) % 3;

    // The argument form on a node that does not serve the plan's slot:
    // Redis redirects it to the plan's node (the plan is declared), and
    // nothing is written anywhere.
    let mut wrong = cl.nodes[other].conn();
    let e = err(
        &mut wrong,
        &[
            b"OKOME.PLAN.GET",
            b"llama3:8b",
            b"plan the login page",
            b"v1",
            b"abc123",
        ],
    );
    assert_eq!(
        e,
        format!("MOVED {slot} 127.0.0.1:{}", cl.nodes[owner].port)
    );
    assert_eq!(cl.assert_keys_local(), 0, "nothing written");

    // On the owner, the argument form works.
    let mut right = cl.nodes[owner].conn();
    let m = plan_get(
        &mut right,
        &["llama3:8b", "plan the login page", "v1", "abc123"],
    );
    assert_eq!(m.status, "MISS");
    assert_eq!(m.key, key);

    // A key-addressed command sent to the wrong node gets MOVED from Redis.
    let moved = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&key, "{}", "TOKEN", m.token.as_deref().unwrap()])
        .query::<redis::Value>(&mut wrong)
        .unwrap_err();
    assert_eq!(moved.kind(), redis::ErrorKind::Moved, "{moved}");
    assert!(moved.to_string().contains(&slot.to_string()), "{moved}");

    // The cluster client follows it: PLAN.SET and PLAN.LOOKUP route by key.
    let mut cc = cl.client();
    let r: (String, i64, Option<i64>, i64) = redis::cmd("OKOME.PLAN.SET")
        .arg(&[
            &key,
            r#"{"steps":[1]}"#,
            "TOKEN",
            m.token.as_deref().unwrap(),
        ])
        .query(&mut cc)
        .unwrap();
    assert_eq!(r, ("STORED".into(), 600_000, None, 1));
    let (status, k, v, ..): PlanReply = redis::cmd("OKOME.PLAN.LOOKUP")
        .arg(&key)
        .query(&mut cc)
        .unwrap();
    assert_eq!(
        (status.as_str(), k.as_str(), v.as_deref()),
        ("HIT", key.as_str(), Some(r#"{"steps":[1]}"#))
    );

    // A cold key through the cluster client: MISS, lock on the plan's node.
    let cold = okome_key(
        &mut any,
        "planner",
        &["llama3:8b", "another prompt", "v1", "abc123"],
    );
    let (status, ..): PlanReply = redis::cmd("OKOME.PLAN.LOOKUP")
        .arg(&cold)
        .query(&mut cc)
        .unwrap();
    assert_eq!(status, "MISS");
    let lock_node = cl.owner(cl.slot(&cold));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{cold}:lock"))
        .query(&mut cl.nodes[lock_node].conn())
        .unwrap();
    assert_eq!(exists, 1, "the lock is on the plan's node");

    // Rate limits route by agent: the window lands on the agent's node.
    for i in 0..5 {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
            .arg(&["agent-123", "3", "60"])
            .query(&mut cc)
            .unwrap();
        assert_eq!(r.0, i64::from(i < 3));
    }
    let w: (i64, i64, i64, i64) = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent-123", "30"])
        .query(&mut cc)
        .unwrap();
    assert_eq!(w.1, 29);
    let rate_key = "okome:budget:rate:{agent-123}";
    assert_eq!(cl.slot(rate_key), cl.slot("agent-123"));
    let on: i64 = redis::cmd("EXISTS")
        .arg(rate_key)
        .query(&mut cl.nodes[cl.owner(cl.slot(rate_key))].conn())
        .unwrap();
    assert_eq!(on, 1);

    // RATE sent to a node that does not serve the agent's slot: Redis
    // redirects it (the agent is declared as a routing argument).
    let agent_other = (cl.owner(cl.slot(rate_key)) + 1) % 3;
    let moved = redis::cmd("OKOME.RATE")
        .arg(&["agent-123", "3", "60"])
        .query::<redis::Value>(&mut cl.nodes[agent_other].conn())
        .unwrap_err();
    assert_eq!(moved.kind(), redis::ErrorKind::Moved, "{moved}");

    // AGENT in the same call as a lookup spans two slots: Redis refuses.
    if cl.slot(rate_key) != slot {
        let e = err(
            &mut cl.nodes[owner].conn(),
            &[
                b"OKOME.PLAN.LOOKUP",
                key.as_bytes(),
                b"AGENT",
                b"agent-123",
                b"LIMIT",
                b"5",
                b"WINDOW",
                b"60",
            ],
        );
        assert_eq!(e, CROSSSLOT);
    }

    // Cache kinds route by their first part (their hash tag).
    let ck = "okome:rag:{myrepo}:c1";
    let cache_owner = cl.owner(cl.slot(ck));
    let stored: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["rag", "myrepo", "c1", r#"{"t":1}"#])
        .query(&mut cl.nodes[cache_owner].conn())
        .unwrap();
    assert_eq!(stored, 3_600_000);
    let moved = redis::cmd("OKOME.CACHE.GET")
        .arg(&["rag", "myrepo", "c1"])
        .query::<redis::Value>(&mut cl.nodes[(cache_owner + 1) % 3].conn())
        .unwrap_err();
    assert_eq!(moved.kind(), redis::ErrorKind::Moved, "{moved}");

    // Whatever happened, no node holds a key outside its slots.
    assert!(cl.assert_keys_local() >= 5);
}

#[test]
fn agents_that_do_not_route_as_their_tag_are_redirected_not_misplaced() {
    let cl = Cluster::start();
    let mut any = cl.nodes[0].conn();
    // An agent id with a byte that is escaped in the key (":" -> %3A)
    // routes by the slot of the raw id, which differs from its window's.
    let (agent, window) = (0..100)
        .map(|i| format!("agent:{i}"))
        .map(|a| {
            let w = okome_key(&mut any, "rate", &[&a]);
            (a, w)
        })
        .find(|(a, w)| cl.owner(cl.slot(a)) != cl.owner(cl.slot(w)))
        .expect("an agent whose routing and window nodes differ");
    // Sent where the id routes, the call is redirected by Redis to the
    // window's node (the window is declared), and nothing is written.
    let routed = cl.owner(cl.slot(&agent));
    let wslot = cl.slot(&window);
    let e = err(
        &mut cl.nodes[routed].conn(),
        &[b"OKOME.RATE", agent.as_bytes(), b"3", b"60"],
    );
    assert_eq!(
        e,
        format!("MOVED {wslot} 127.0.0.1:{}", cl.nodes[cl.owner(wslot)].port)
    );
    assert_eq!(cl.assert_keys_local(), 0, "nothing written anywhere");
}

/// The ids `OKOME.TAKE ... RESERVE` and `OKOME.LEASE.ACQUIRE` reply carry
/// their subject's hash tag, so the redis crate's cluster client routes
/// `OKOME.SETTLE` and `OKOME.LEASE.RENEW`/`RELEASE` by them (their first
/// argument) to the node that holds the windows and the pool.
#[test]
fn reservation_and_lease_ids_route_through_the_cluster_client() {
    let cl = Cluster::start();
    let mut c = cl.client();
    // Subjects in different slots, so several nodes take part.
    for subject in ["tenant-a", "tenant-b", "model-x"] {
        let key = format!("okome:budget:rate:{{{subject}}}:tpm");
        let take: redis::Value = redis::cmd("OKOME.TAKE")
            .arg(&["1", subject, "tpm", "1000", "60", "400", "RESERVE", "60000"])
            .query(&mut c)
            .unwrap_or_else(|e| panic!("TAKE {subject}: {e}"));
        let redis::Value::Array(parts) = take else {
            panic!("TAKE {subject}: {take:?}");
        };
        assert_eq!(parts.first(), Some(&redis::Value::Int(1)), "{parts:?}");
        let id = match parts.get(2) {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("TAKE {subject}: reservation {other:?}"),
        };
        assert!(id.starts_with(&format!("{{{subject}}}:")), "{id}");
        assert_eq!(cl.slot(&id), cl.slot(&key), "{id} routes as {key}");
        let settled: redis::Value = redis::cmd("OKOME.SETTLE")
            .arg(&[id.as_str(), "150"])
            .query(&mut c)
            .unwrap_or_else(|e| panic!("SETTLE {id}: {e}"));
        let redis::Value::Array(s) = settled else {
            panic!("SETTLE {id}: {settled:?}");
        };
        assert_eq!(s.first(), Some(&redis::Value::Int(1)), "{s:?}");

        let lease: redis::Value = redis::cmd("OKOME.LEASE.ACQUIRE")
            .arg(&[subject, "2", "30000"])
            .query(&mut c)
            .unwrap_or_else(|e| panic!("LEASE.ACQUIRE {subject}: {e}"));
        let id = match lease {
            redis::Value::Array(ref p) => match p.first() {
                Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("LEASE.ACQUIRE {subject}: {other:?}"),
            },
            other => panic!("LEASE.ACQUIRE {subject}: {other:?}"),
        };
        let pool = format!("okome:budget:lease:{{{subject}}}");
        assert_eq!(cl.slot(&id), cl.slot(&pool), "{id} routes as {pool}");
        let renewed: i64 = redis::cmd("OKOME.LEASE.RENEW")
            .arg(&[id.as_str(), "60000"])
            .query(&mut c)
            .unwrap_or_else(|e| panic!("RENEW {id}: {e}"));
        assert_eq!(renewed, 1);
        let released: i64 = redis::cmd("OKOME.LEASE.RELEASE")
            .arg(&[id.as_str()])
            .query(&mut c)
            .unwrap_or_else(|e| panic!("RELEASE {id}: {e}"));
        assert_eq!(released, 1);
    }
    // Every key lives on the node that serves its slot.
    assert!(cl.assert_keys_local() >= 3);
}
