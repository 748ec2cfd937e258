//! A real 3-primary Redis Cluster on loopback, each node with okome.

use crate::Server;
use std::process::Command;
use std::time::{Duration, Instant};

/// `CLUSTER SLOTS` of one node as `(first, last, primary port)`, sorted.
pub fn slot_ranges(c: &mut redis::Connection) -> Vec<(i64, i64, u16)> {
    let slots: Vec<(i64, i64, Vec<redis::Value>)> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(c)
        .expect("CLUSTER SLOTS");
    let mut out: Vec<(i64, i64, u16)> = slots
        .into_iter()
        .map(|(lo, hi, primary)| match primary.get(1) {
            Some(redis::Value::Int(p)) => (lo, hi, *p as u16),
            other => panic!("unexpected CLUSTER SLOTS entry {other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// The port of the primary serving `slot` in `ranges`.
pub fn owner_in(ranges: &[(i64, i64, u16)], slot: i64) -> Option<u16> {
    ranges
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
        .map(|r| r.2)
}

pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            let mut c = n.conn();
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster never became ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cluster { nodes }
    }

    pub fn slot(&self, key: &str) -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].conn())
            .unwrap()
    }

    /// The node serving `slot`, from CLUSTER SLOTS.
    pub fn owner(&self, slot: i64) -> usize {
        let ranges = slot_ranges(&mut self.nodes[0].conn());
        let port = owner_in(&ranges, slot).unwrap_or_else(|| panic!("slot {slot} unassigned"));
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of ours")
    }

    /// The node serving `key`.
    pub fn node_of(&self, key: &str) -> usize {
        self.owner(self.slot(key))
    }

    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key on every node is in a slot that node serves.
    pub fn assert_keys_local(&self) -> usize {
        let mut total = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut n.conn()).unwrap();
            for k in keys {
                assert_eq!(
                    self.owner(self.slot(&k)),
                    i,
                    "{k} is on node {i}, not its slot's owner"
                );
                total += 1;
            }
        }
        total
    }
}
