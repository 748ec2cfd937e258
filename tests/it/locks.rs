//! The stampede lock: OKOME.LOCK / OKOME.UNLOCK and the lock PLAN.GET takes,
//! step by step with the lock's TTL checked after every step, token
//! uniqueness, and exactly one winner among concurrent callers.

use crate::support::*;

use redis::Connection;
use std::collections::HashSet;
use std::time::Duration;

/// The lock of `key` is free: no key at all (never a lock without a TTL).
fn assert_free(c: &mut Connection, key: &str) {
    let lk = lock_of(key);
    assert!(!exists(c, &lk), "{lk} should be gone");
    assert_eq!(pttl(c, &lk), -2);
}

/// Every `...:lock` key in the server has a TTL within the lock standard.
fn assert_all_locks_expire(c: &mut Connection) {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*:lock").query(c).unwrap();
    for k in keys {
        let t = pttl(c, &k);
        assert!(t > 0 && t <= 10_000, "{k}: PTTL {t}");
    }
}

#[test]
fn acquire_extend_unlock_step_by_step() {
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:tools:{v1}";

    // Acquire with the shortest TTL.
    let tok = acquire(&mut c, key, &["TTL", "8000"]).expect("free lock");
    assert_token(&tok);
    assert_held(&mut c, key, &tok, 8000);

    // Held: a second acquire gets nil and changes nothing.
    assert_eq!(acquire(&mut c, key, &[]), None);
    assert_eq!(acquire(&mut c, key, &["TTL", "10000"]), None);
    assert_held(&mut c, key, &tok, 8000);

    // Extend to the longest TTL: PTTL moves up.
    assert_eq!(extend(&mut c, key, &tok, &["TTL", "10000"]), 1);
    assert_held(&mut c, key, &tok, 10_000);
    assert!(pttl(&mut c, "okome:tools:{v1}:lock") > 9000);

    // Extend with a wrong token: 0, holder and TTL untouched.
    for wrong in [
        "0123456789abcdef0123456789abcdef",
        "x",
        &tok[..31],
        &tok.to_uppercase(),
    ] {
        assert_eq!(extend(&mut c, key, wrong, &["TTL", "8000"]), 0, "{wrong}");
        assert_held(&mut c, key, &tok, 10_000);
    }

    // Extend without TTL: back to the default 9 s.
    assert_eq!(extend(&mut c, key, &tok, &[]), 1);
    assert_held(&mut c, key, &tok, 9000);
    // TTL before TOKEN is the same command.
    assert_eq!(
        lock(&mut c, &[key, "ttl", "9500", "token", &tok]),
        redis::Value::Int(1)
    );
    assert_held(&mut c, key, &tok, 9500);

    // Unlock with a wrong token: 0, lock kept with its TTL.
    assert_eq!(unlock(&mut c, key, "0123456789abcdef0123456789abcdef"), 0);
    assert_eq!(unlock(&mut c, key, &tok[1..]), 0);
    assert_held(&mut c, key, &tok, 9500);

    // Unlock with the token: 1, key gone.
    assert_eq!(unlock(&mut c, key, &tok), 1);
    assert_free(&mut c, key);

    // Released: unlock and extend with the old token are both 0, and
    // extending creates nothing.
    assert_eq!(unlock(&mut c, key, &tok), 0);
    assert_eq!(extend(&mut c, key, &tok, &["TTL", "10000"]), 0);
    assert_free(&mut c, key);

    // Re-acquire with the default TTL: a new token.
    let tok2 = acquire(&mut c, key, &[]).expect("free again");
    assert_token(&tok2);
    assert_ne!(tok, tok2);
    assert_held(&mut c, key, &tok2, 9000);
    assert_eq!(extend(&mut c, key, &tok, &[]), 0, "the old token is dead");
    assert_held(&mut c, key, &tok2, 9000);

    // The protected key itself is never touched by its lock.
    assert!(!exists(&mut c, key));
    assert_all_locks_expire(&mut c);
}

#[test]
fn lock_ttl_bounds_are_inclusive() {
    let s = Server::start();
    let mut c = s.conn();
    for (i, ttl) in ["8000", "8001", "9999", "10000"].iter().enumerate() {
        let key = format!("okome:health:{{n{i}}}");
        let tok = acquire(&mut c, &key, &["TTL", ttl]).unwrap();
        assert_held(&mut c, &key, &tok, ttl.parse().unwrap());
        assert_eq!(extend(&mut c, &key, &tok, &["TTL", ttl]), 1);
        assert_held(&mut c, &key, &tok, ttl.parse().unwrap());
    }
    for ttl in ["7999", "10001"] {
        let e = err(
            &mut c,
            &[b"OKOME.LOCK", b"okome:health:{x}", b"TTL", ttl.as_bytes()],
        );
        assert_eq!(
            e,
            format!("ERR ttl {ttl} is out of range: must be between 8000 and 10000 ms")
        );
    }
    assert!(!exists(&mut c, "okome:health:{x}:lock"));
    assert_all_locks_expire(&mut c);
}

#[test]
fn every_cache_kind_can_be_locked_independently() {
    let s = Server::start();
    let mut c = s.conn();
    let planner = okome_key(&mut c, "planner", &["llama3:8b", "p", "t", "r"]);
    let keys = [
        planner.as_str(),
        "okome:model_meta:{llama3%3A8b}",
        "okome:rag:{repo}:chunk",
        "okome:tools:{v1}",
        "okome:health:{node-1}",
        // Same component, other kind: another lock.
        "okome:model_meta:{v1}",
        "okome:health:{v1}",
    ];
    let mut toks = Vec::new();
    for k in keys {
        let t = acquire(&mut c, k, &[]).unwrap_or_else(|| panic!("{k} free"));
        assert_held(&mut c, k, &t, 9000);
        toks.push(t);
    }
    for k in keys {
        assert_eq!(acquire(&mut c, k, &[]), None, "{k} held");
    }
    let lock_keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(lock_keys.len(), keys.len());
    for (k, t) in keys.iter().zip(&toks) {
        assert_eq!(unlock(&mut c, k, t), 1);
        assert_free(&mut c, k);
    }
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
}

#[test]
fn lock_does_not_touch_the_protected_value() {
    let s = Server::start();
    let mut c = s.conn();
    let ms = cache_set(&mut c, &["rag", "r", "c", "{\"v\":1}", "TTL", "1800"]);
    assert_eq!(ms, 1_800_000);
    let tok = acquire(&mut c, "okome:rag:{r}:c", &[]).unwrap();
    assert_eq!(
        extend(&mut c, "okome:rag:{r}:c", &tok, &["TTL", "10000"]),
        1
    );
    assert_eq!(unlock(&mut c, "okome:rag:{r}:c", &tok), 1);
    assert_eq!(get(&mut c, "okome:rag:{r}:c").as_deref(), Some("{\"v\":1}"));
    let t = pttl(&mut c, "okome:rag:{r}:c");
    assert!(t > 1_790_000 && t <= 1_800_000, "{t}");
}

/// OKOME.LOCK on a planner key and PLAN.GET share one lock.
#[test]
fn lock_and_plan_get_share_the_lock() {
    let s = Server::start();
    let mut c = s.conn();
    let a = ["m", "p", "t", "r"];

    let miss = plan_get(&mut c, &a);
    assert_eq!(miss.status, "MISS");
    let tok = miss.token.clone().unwrap();
    assert_token(&tok);
    assert_held(&mut c, &miss.key, &tok, 9000);
    assert_eq!(acquire(&mut c, &miss.key, &[]), None);

    // The PLAN.GET token extends through OKOME.LOCK; LOCKED reports the TTL.
    assert_eq!(extend(&mut c, &miss.key, &tok, &["TTL", "10000"]), 1);
    let locked = plan_get(&mut c, &a);
    assert_eq!(locked.status, "LOCKED");
    assert!(
        matches!(locked.ms, Some(m) if m > 9000 && m <= 10_000),
        "{locked:?}"
    );
    assert_held(&mut c, &miss.key, &tok, 10_000);

    // UNLOCK releases it: the next PLAN.GET misses with a new token.
    assert_eq!(unlock(&mut c, &miss.key, &tok), 1);
    assert_free(&mut c, &miss.key);
    let again = plan_get(&mut c, &[a[0], a[1], a[2], a[3], "LOCKTTL", "8000"]);
    assert_eq!(again.status, "MISS");
    assert_eq!(again.ms, Some(8000));
    let tok2 = again.token.clone().unwrap();
    assert_ne!(tok, tok2);
    assert_held(&mut c, &miss.key, &tok2, 8000);
    assert_eq!(unlock(&mut c, &miss.key, &tok2), 1);

    // A token from OKOME.LOCK is released by PLAN.SET ... TOKEN.
    let tok3 = acquire(&mut c, &miss.key, &[]).unwrap();
    assert_eq!(plan_get(&mut c, &a).status, "LOCKED");
    let r = plan_store(&mut c, &[miss.key.as_str(), "[]", "TOKEN", tok.as_str()]);
    assert_eq!(r, ("STORED".into(), 600_000, None, 0), "stale token");
    assert_held(&mut c, &miss.key, &tok3, 9000);
    let r = plan_store(&mut c, &[miss.key.as_str(), "[1]", "TOKEN", tok3.as_str()]);
    assert_eq!(r, ("STORED".into(), 600_000, None, 1));
    assert_free(&mut c, &miss.key);
    let hit = plan_get(&mut c, &a);
    assert_eq!(
        (hit.status.as_str(), hit.value.as_deref()),
        ("HIT", Some("[1]"))
    );
    assert_free(&mut c, &miss.key);

    // A HIT takes no lock, but OKOME.LOCK still locks the key (refresh).
    let tok4 = acquire(&mut c, &miss.key, &[]).unwrap();
    assert_eq!(plan_get(&mut c, &a).status, "HIT");
    assert_held(&mut c, &miss.key, &tok4, 9000);
    assert_all_locks_expire(&mut c);
}

#[test]
fn an_expired_lock_is_free_and_its_token_dead() {
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:model_meta:{m}";
    let old = acquire(&mut c, key, &[]).unwrap();
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(format!("{key}:lock"))
        .arg(20)
        .query(&mut c)
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(extend(&mut c, key, &old, &[]), 0);
    assert_eq!(unlock(&mut c, key, &old), 0);
    assert_free(&mut c, key);
    let new = acquire(&mut c, key, &[]).unwrap();
    assert_ne!(old, new);
    assert_held(&mut c, key, &new, 9000);

    // Same through PLAN.GET: an expired planner lock gives a new MISS.
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(format!("{}:lock", m.key))
        .arg(20)
        .query(&mut c)
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let m2 = plan_get(&mut c, &["m", "p", "t", "r"]);
    assert_eq!(m2.status, "MISS");
    assert_ne!(m.token, m2.token);
    assert_held(&mut c, &m.key, m2.token.as_deref().unwrap(), 9000);
}

#[test]
fn tokens_are_unique() {
    let s = Server::start();
    let mut c = s.conn();
    let mut seen = HashSet::new();
    for i in 0..2000 {
        let key = if i % 2 == 0 {
            "okome:tools:{v1}".to_string()
        } else {
            format!("okome:health:{{n{}}}", i % 7)
        };
        let t = acquire(&mut c, &key, &[]).unwrap_or_else(|| panic!("#{i}: {key} held"));
        assert_token(&t);
        assert!(seen.insert(t.clone()), "#{i}: token {t} handed out twice");
        if i % 100 == 0 {
            assert_held(&mut c, &key, &t, 9000);
        }
        assert_eq!(unlock(&mut c, &key, &t), 1, "#{i}");
    }
    // PLAN.GET tokens come from the same generator.
    for i in 0..200 {
        let m = plan_get(&mut c, &["m", &format!("prompt {i}"), "t", "r"]);
        let t = m.token.unwrap();
        assert_token(&t);
        assert!(
            seen.insert(t.clone()),
            "PLAN.GET #{i}: token {t} seen before"
        );
    }
    assert_eq!(seen.len(), 2200);
    assert_all_locks_expire(&mut c);
}

#[test]
fn concurrent_plan_get_has_exactly_one_miss() {
    let s = Server::start();
    let mut c = s.conn();
    for round in 0..5 {
        let prompt = format!("cold prompt {round}");
        let replies = race(&s, 40, move |_, mut con| {
            plan_get(&mut con, &["llama3:8b", &prompt, "v1", "repo"])
        });
        let misses: Vec<&Plan> = replies.iter().filter(|p| p.status == "MISS").collect();
        let locked = replies.iter().filter(|p| p.status == "LOCKED").count();
        assert_eq!(misses.len(), 1, "round {round}: {replies:?}");
        assert_eq!(locked, 39, "round {round}: {replies:?}");
        let key = &misses[0].key;
        assert!(replies.iter().all(|p| &p.key == key));
        assert!(replies
            .iter()
            .filter(|p| p.status == "LOCKED")
            .all(|p| p.token.is_none()
                && p.value.is_none()
                && matches!(p.ms, Some(m) if m > 0 && m <= 9000)));
        let tok = misses[0].token.clone().unwrap();
        assert_eq!(misses[0].ms, Some(9000));
        assert_held(&mut c, key, &tok, 9000);
        // A second wave (lock now held) is all LOCKED.
        let prompt = format!("cold prompt {round}");
        let again = race(&s, 40, move |_, mut con| {
            plan_get(&mut con, &["llama3:8b", &prompt, "v1", "repo"]).status
        });
        assert!(again.iter().all(|st| st == "LOCKED"), "{again:?}");
    }
    assert_all_locks_expire(&mut c);
}

#[test]
fn concurrent_lock_has_exactly_one_holder() {
    let s = Server::start();
    let mut c = s.conn();
    for round in 0..5 {
        let key = format!("okome:rag:{{repo}}:chunk{round}");
        let k2 = key.clone();
        let replies = race(&s, 40, move |_, mut con| acquire(&mut con, &k2, &[]));
        let winners: Vec<&String> = replies.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        assert_held(&mut c, &key, winners[0], 9000);

        // Everyone tries to release with the winner's token: exactly one 1.
        let tok = winners[0].clone();
        let k3 = key.clone();
        let released = race(&s, 40, move |_, mut con| unlock(&mut con, &k3, &tok));
        assert_eq!(released.iter().sum::<i64>(), 1, "{released:?}");
        assert_free(&mut c, &key);
    }
    // Mixed: OKOME.LOCK and PLAN.GET racing for the same planner lock.
    let pk = okome_key(&mut c, "planner", &["m", "race", "t", "r"]);
    let pk2 = pk.clone();
    let replies = race(&s, 40, move |i, mut con| {
        if i % 2 == 0 {
            acquire(&mut con, &pk2, &[])
        } else {
            plan_get(&mut con, &["m", "race", "t", "r"]).token
        }
    });
    let winners: Vec<&String> = replies.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{replies:?}");
    assert_held(&mut c, &pk, winners[0], 9000);
    assert_all_locks_expire(&mut c);
}
