//! ACL for keys a command finds while it runs. The keys a call touches are
//! declared in its arguments (see `okome_core::declared`), so Redis checks
//! them before okome runs, selectors included. A few keys are only known
//! once data is read — the entries of an agent's ledger listed by
//! `AGENT.KEYS` or deleted by `AGENT.PURGE`, a key of another slot
//! recorded by `AGENT.RECORD` — and are checked here the same way: Redis
//! itself is asked whether the user may run this command with those keys
//! declared (`RM_ACLCheckCommandPermissions`), so one selector must allow
//! the command and every key, as for the keys of a call.

use crate::cluster;
use crate::rkey::{Name, Strings};
use okome_core::declared::{Access, Declared};
use okome_core::keys::printable;
use okome_core::Error;
use redis_module::{raw, Context};
use std::ffi::c_int;
use std::ptr;

/// The calling user, for the duration of one command.
pub struct User {
    ptr: *mut raw::RedisModuleUser,
}

impl User {
    /// The user running this command; `None` without a client (timers) or
    /// if the user vanished.
    pub fn current(ctx: &Context) -> Option<User> {
        // SAFETY: the name string is freed right after the lookup.
        unsafe {
            let name = raw::RedisModule_GetCurrentUserName?(ctx.ctx);
            if name.is_null() {
                return None;
            }
            let user =
                raw::RedisModule_GetModuleUserFromUserName.map_or(ptr::null_mut(), |f| f(name));
            if let Some(free) = raw::RedisModule_FreeString {
                free(ctx.ctx, name);
            }
            (!user.is_null()).then_some(User { ptr: user })
        }
    }

    /// Whether the user may run `command` with `keys` declared, as Redis
    /// would decide for a call that declared them.
    pub fn may_call(&self, command: &str, keys: &Declared) -> bool {
        let tail = keys.tail();
        let args = std::iter::once(command.as_bytes()).chain(tail.iter().map(Vec::as_slice));
        let Some(mut argv) = Strings::new(args) else {
            return false;
        };
        c_int::try_from(argv.len()).is_ok_and(|argc| {
            // SAFETY: a live user and `argc` live strings.
            unsafe {
                raw::RedisModule_ACLCheckCommandPermissions.is_some_and(|check| {
                    check(self.ptr, argv.as_mut_ptr(), argc) == raw::REDISMODULE_OK as c_int
                })
            }
        })
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // SAFETY: frees the user obtained from GetModuleUserFromUserName.
        unsafe {
            if let Some(f) = raw::RedisModule_FreeModuleUser {
                f(self.ptr);
            }
        }
    }
}

/// Checks that the current user may run `command` with `keys` declared;
/// otherwise [`refusal`] naming `shown`, `why` saying how the command came
/// to it.
pub fn check(
    ctx: &Context,
    command: &str,
    keys: &Declared,
    shown: &[u8],
    why: &str,
) -> Result<(), Error> {
    match User::current(ctx) {
        Some(user) if !user.may_call(command, keys) => {
            Err(refusal(ctx, &user, command, shown, why))
        }
        _ => Ok(()),
    }
}

/// Checks keys `command` found while running (`found`, each with how it
/// touches it) as if the call had declared them beside `base` (the keys
/// it did declare, the first of which is named if no found key is refused
/// on its own): in a cluster, that this node may serve them all now
/// (`CROSSSLOT`, or `TRYAGAIN` while some moved away in a migration); and
/// the user's ACL, one selector allowing the command and every key.
/// `why` says how the command came to them. Nothing has been written yet.
pub fn check_found(
    ctx: &Context,
    command: &str,
    base: &Declared,
    found: &[(Access, &[u8])],
    why: &str,
) -> Result<(), Error> {
    if found.is_empty() {
        return Ok(());
    }
    let with = |d: Declared, (a, k): &(Access, &[u8])| d.with(*a, k.to_vec());
    let all = found.iter().fold(base.clone(), with);
    cluster::check(ctx, &all)?;
    let Some(user) = User::current(ctx) else {
        return Ok(());
    };
    if user.may_call(command, &all) {
        return Ok(());
    }
    let shown = found
        .iter()
        .find(|f| !user.may_call(command, &with(base.clone(), f)))
        .map(|(_, k)| *k)
        .or_else(|| base.iter().next().map(|(_, k)| k))
        .unwrap_or_default();
    Err(refusal(ctx, &user, command, shown, why))
}

/// `NOPERM` for `shown` (a key `command` found while running: `why`),
/// with an entry in `ACL LOG` like Redis's own refusals.
pub fn refusal(ctx: &Context, user: &User, command: &str, shown: &[u8], why: &str) -> Error {
    log_refusal(ctx, user, shown);
    Error::Raw(format!(
        "NOPERM this user has no permissions to access the '{}' key ({command} {why})",
        printable(shown)
    ))
}

fn log_refusal(ctx: &Context, user: &User, key: &[u8]) {
    let object = Name::new(key);
    if object.ptr().is_null() {
        return;
    }
    // SAFETY: live context, user and string; the log copies the string.
    unsafe {
        if let Some(add) = raw::RedisModule_ACLAddLogEntry {
            add(
                ctx.ctx,
                user.ptr,
                object.ptr(),
                raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_KEY,
            );
        }
    }
}
