//! ACL for the keys okome derives. Redis checks the key arguments a command
//! declares; the keys the module computes (plan keys from a prompt, locks,
//! rate and budget windows, cache keys) are checked here against the
//! calling user's key permissions, before anything is written.

use crate::rkey::{Key, Name};
use okome_core::keys::printable;
use okome_core::Error;
use redis_module::{raw, Context};
use std::ffi::c_int;
use std::ptr;

/// What a command does to a derived key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

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

    /// Whether the user may `access` `key`.
    pub fn may(&self, key: &[u8], access: Access) -> bool {
        self.may_name(&Name::new(key), access)
    }

    /// [`User::may`] with a key name already made.
    pub fn may_name(&self, key: &Name, access: Access) -> bool {
        let flags = match access {
            Access::Read => raw::REDISMODULE_CMD_KEY_ACCESS,
            Access::Write => raw::REDISMODULE_CMD_KEY_UPDATE,
        };
        if key.ptr().is_null() {
            return false;
        }
        // SAFETY: `ptr` is a live user and the name a live string.
        unsafe {
            raw::RedisModule_ACLCheckKeyPermissions.is_some_and(|check| {
                check(self.ptr, key.ptr(), flags as c_int) == raw::REDISMODULE_OK as c_int
            })
        }
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

/// The refusal for `key`.
pub fn denied(key: &[u8], access: Access) -> Error {
    Error::Raw(format!(
        "NOPERM this user has no permissions to {} the '{}' key (okome derives it from the arguments)",
        match access {
            Access::Read => "read",
            Access::Write => "write",
        },
        printable(key)
    ))
}

/// Opens a derived key after checking `user` may `access` it, making its
/// name once for both.
pub fn open(ctx: &Context, user: Option<&User>, key: &[u8], access: Access) -> Result<Key, Error> {
    let name = Name::new(key);
    if user.is_some_and(|u| !u.may_name(&name, access)) {
        return Err(denied(key, access));
    }
    Ok(Key::open_name(ctx, name, access == Access::Write))
}
