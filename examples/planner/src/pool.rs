//! A small pool of Redis connections, one per request in flight.
//!
//! `OKOME.PLAN.GET ... WAIT ms` blocks the *connection* it runs on inside the
//! server until the leader's plan is stored. On one shared (multiplexed)
//! connection that would stall every other request behind the waiter, and
//! the leader's own `OKOME.PLAN.SET`, queued behind it, could not wake it:
//! the followers would all time out. So each request checks out a connection
//! of its own, and gives it back when it is done.
//!
//! A connection goes back to the pool only after a complete reply (a value or
//! an error reply from the server). If a call is cancelled mid-flight (the
//! HTTP client hung up while its request was waiting) or the connection
//! failed, the connection is dropped instead: it may still be blocked in the
//! server or broken, and must not serve the next request.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisResult};
use std::sync::Mutex;
use std::time::Duration;

/// Connections kept idle at most; more are opened under load and closed after.
const MAX_IDLE: usize = 64;

pub struct Pool {
    client: Client,
    config: AsyncConnectionConfig,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Pool {
    /// `response_timeout` bounds every call: it must exceed the longest
    /// `WAIT` the planner sends.
    pub fn new(client: Client, response_timeout: Duration) -> Pool {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(response_timeout);
        Pool {
            client,
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, or a new one.
    pub async fn get(&self) -> RedisResult<Conn<'_>> {
        let idle = self.idle().pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                self.client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?
            }
        };
        Ok(Conn {
            pool: self,
            conn,
            reusable: true,
        })
    }

    /// Runs one command on a connection of its own.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.get().await?.query(cmd).await
    }
}

/// A checked-out connection; returned to the pool on drop if reusable.
pub struct Conn<'a> {
    pool: &'a Pool,
    conn: MultiplexedConnection,
    reusable: bool,
}

impl Conn<'_> {
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        // Unusable until a reply arrives: if this future is dropped while
        // the command is in flight, the connection is discarded.
        self.reusable = false;
        let result = cmd.query_async(&mut self.conn).await;
        self.reusable = match &result {
            Ok(_) => true,
            // An error reply from the server: the connection itself is fine.
            Err(e) => e.code().is_some() && !e.is_unrecoverable_error(),
        };
        result
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if self.reusable {
            let mut idle = self.pool.idle();
            if idle.len() < MAX_IDLE {
                idle.push(self.conn.clone());
            }
        }
    }
}
