//! Command registration through the raw module API: `CreateCommand` with
//! flags (`getkeys-api` for a command that declares keys), then
//! `SetCommandInfo` with arity, summary, version and key specs, and a
//! trampoline per command that answers Redis's key-position requests from
//! the tail of declared keys and turns a panic into an error reply instead
//! of aborting the server.

use crate::call::Call;
use crate::cmd::{agent, budget, cache, lease, lock, plan, take, throttle};
use crate::docs;
use crate::reply::PANIC_REPLY;
use okome_core::command::{self, Command};
use okome_core::declared::Tail;
use redis_module::{raw, Context, RedisError, RedisValue, Status};
use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// A command handler: the call's arguments in, a reply out.
type Handler<T> = fn(&Context, &Call) -> Result<T, okome_core::Error>;

/// What a handler replies with.
trait Respond {
    fn respond(self, ctx: &Context) -> Status;
}

impl Respond for RedisValue {
    fn respond(self, ctx: &Context) -> Status {
        ctx.reply(Ok(self))
    }
}

/// A flat array of integers, replied straight through the raw API: the
/// reply of `OKOME.RATE`, `OKOME.WBUDGET` and `OKOME.THROTTLE`, on the hot
/// path.
impl<const N: usize> Respond for [i64; N] {
    fn respond(self, ctx: &Context) -> Status {
        // SAFETY: a live command context; an array of N followed by N items.
        unsafe {
            let (Some(array), Some(int)) = (
                raw::RedisModule_ReplyWithArray,
                raw::RedisModule_ReplyWithLongLong,
            ) else {
                return Status::Err;
            };
            array(ctx.ctx, N as std::os::raw::c_long);
            for v in self {
                int(ctx.ctx, v);
            }
        }
        Status::Ok
    }
}

/// The bytes of one argument, borrowed from Redis for this call.
fn arg_bytes<'a>(s: *mut raw::RedisModuleString) -> &'a [u8] {
    let mut len: usize = 0;
    // SAFETY: `s` is a live RedisModuleString owned by the call.
    let p = unsafe { raw::RedisModule_StringPtrLen.map_or(ptr::null(), |f| f(s, &mut len)) };
    if p.is_null() {
        &[][..]
    } else {
        // SAFETY: p points to len bytes owned by the argument.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }
}

/// Up to this many arguments are gathered on the stack, without allocating.
const STACK_ARGS: usize = 24;

/// Calls `f` with the arguments after the command name.
fn with_args<R>(
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    let n = usize::try_from(argc).unwrap_or(0);
    let strings: &[*mut raw::RedisModuleString] = if argv.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: Redis passes `argc` valid strings that outlive the call.
        unsafe { std::slice::from_raw_parts(argv, n) }
    };
    let rest = strings.get(1..).unwrap_or_default();
    if rest.len() <= STACK_ARGS {
        let mut buf: [&[u8]; STACK_ARGS] = [&[]; STACK_ARGS];
        for (slot, &s) in buf.iter_mut().zip(rest) {
            *slot = arg_bytes(s);
        }
        f(buf.get(..rest.len()).unwrap_or_default())
    } else {
        let v: Vec<&[u8]> = rest.iter().map(|&s| arg_bytes(s)).collect();
        f(&v)
    }
}

/// Whether Redis asks for the key positions of a call (ACL, cluster
/// routing, client tracking) rather than running it.
fn keys_position_request(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: a live context.
    unsafe { raw::RedisModule_IsKeysPositionRequest.is_some_and(|f| f(ctx) != 0) }
}

/// Answers a key-position request: the keys of the call's tail, each with
/// its access flags (none without a tail: the call touches nothing yet).
fn report_keys(ctx: *mut raw::RedisModuleCtx, argv: *mut *mut raw::RedisModuleString, argc: c_int) {
    with_args(argv, argc, |args| {
        let Some(tail) = Tail::find(args) else {
            return;
        };
        for (i, access) in tail.positions() {
            // Positions count the command name.
            let Ok(pos) = c_int::try_from(i.saturating_add(1)) else {
                return;
            };
            // SAFETY: a key-position request context.
            unsafe {
                if let Some(at) = raw::RedisModule_KeyAtPosWithFlags {
                    at(ctx, pos, docs::key_flags(access) as c_int);
                }
            }
        }
    });
}

/// Redis's arity error for `command` called with `n` arguments after its
/// name, if its arity refuses them. Redis checks the arity of the arguments
/// it receives, the tail of declared keys included; this checks the user's.
fn arity_error(command: &Command, n: usize) -> Option<String> {
    let given = i64::try_from(n).ok()?.saturating_add(1);
    let want = i64::from(command.arity);
    let ok = if want < 0 {
        given >= -want
    } else {
        given == want
    };
    (!ok).then(|| command.arity_error().to_string())
}

/// What a call came to: a reply, okome's error, or Redis's arity error
/// (replied as Redis replies it, and not counted in `errors`).
enum Outcome<T> {
    Reply(T),
    Failed(okome_core::Error),
    Arity(String),
}

fn dispatch<T: Respond>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler<T>,
    command: &'static Command,
) -> c_int {
    let declares = command.keys.is_some();
    if declares && keys_position_request(ctx) {
        crate::stats::guard(ctx, "key-position request", || report_keys(ctx, argv, argc));
        return raw::REDISMODULE_OK as c_int;
    }
    let context = Context::new(ctx);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        with_args(argv, argc, |args| {
            let call = if declares {
                Call::declaring(args)
            } else {
                Call::plain(args)
            };
            if let Some(e) = arity_error(command, call.args.len()) {
                return Outcome::Arity(e);
            }
            match handler(&context, &call) {
                Ok(v) => Outcome::Reply(v),
                Err(e) => Outcome::Failed(e),
            }
        })
    }));
    let error = match outcome {
        Ok(Outcome::Reply(v)) => return v.respond(&context) as c_int,
        Ok(Outcome::Arity(e)) => return context.reply(Err(RedisError::String(e))) as c_int,
        Ok(Outcome::Failed(e)) => RedisError::String(e.to_string()),
        Err(_) => RedisError::Str(PANIC_REPLY),
    };
    crate::stats::bump(&crate::stats::c::errors);
    context.reply(Err(error)) as c_int
}

type Callback =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// A command as registered: its description and the callback Redis calls.
pub struct Registered {
    pub command: &'static Command,
    pub callback: Callback,
}

/// A command's description with its handler, behind a callback of its own.
macro_rules! registered {
    ($command:path => $handler:path) => {{
        extern "C" fn callback(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            dispatch(ctx, argv, argc, $handler, &$command)
        }
        Registered {
            command: &$command,
            callback,
        }
    }};
}

/// Every command and its handler, in the order they are registered.
pub const COMMANDS: &[Registered] = &[
    registered!(command::PLAN_GET => plan::plan_get),
    registered!(command::PLAN_LOOKUP => plan::plan_lookup),
    registered!(command::PLAN_SET => plan::plan_set),
    registered!(command::LOCK => lock::lock),
    registered!(command::UNLOCK => lock::unlock),
    registered!(command::RATE => budget::rate),
    registered!(command::WBUDGET => budget::wbudget),
    registered!(command::THROTTLE => throttle::throttle),
    registered!(command::TAKE => take::take),
    registered!(command::SETTLE => take::settle),
    registered!(command::CACHE_GET => cache::cache_get),
    registered!(command::CACHE_SET => cache::cache_set),
    registered!(command::KEY => cache::key),
    registered!(command::AGENT_RECORD => agent::agent_record),
    registered!(command::AGENT_KEYS => agent::agent_keys),
    registered!(command::AGENT_PURGE => agent::agent_purge),
    registered!(command::LEASE_ACQUIRE => lease::lease_acquire),
    registered!(command::LEASE_RENEW => lease::lease_renew),
    registered!(command::LEASE_RELEASE => lease::lease_release),
];

const SINCE: &str = "0.1.0";

/// Creates the command: its name, flags and callback.
fn create(ctx: &Context, r: &Registered) -> Result<*mut raw::RedisModuleCommand, String> {
    let command = r.command;
    let name = CString::new(command.name).map_err(|e| e.to_string())?;
    let flags = if command.keys.is_some() {
        format!("{} getkeys-api", command.flags)
    } else {
        command.flags.to_string()
    };
    let flags = CString::new(flags).map_err(|e| e.to_string())?;
    let (Some(create), Some(get)) = (unsafe { raw::RedisModule_CreateCommand }, unsafe {
        raw::RedisModule_GetCommand
    }) else {
        return Err("no CreateCommand".into());
    };
    // No legacy key positions: the keys are the tail's, which Redis asks
    // for through the getkeys API (and finds with the key specs).
    // SAFETY: valid C strings and a callback with the expected signature.
    let rc = unsafe {
        create(
            ctx.ctx,
            name.as_ptr(),
            Some(r.callback),
            flags.as_ptr(),
            0,
            0,
            0,
        )
    };
    if rc != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not create command {}", command.name));
    }
    // SAFETY: the command was just created under this name.
    let cmd = unsafe { get(ctx.ctx, name.as_ptr()) };
    if cmd.is_null() {
        return Err(format!("command {} not found after creation", command.name));
    }
    Ok(cmd)
}

/// Sets what `COMMAND INFO` and `COMMAND DOCS` show of `command`: arity,
/// summary, complexity, arguments and key specs.
fn set_info(cmd: *mut raw::RedisModuleCommand, command: &Command) -> Result<(), String> {
    let set_info = unsafe { raw::RedisModule_SetCommandInfo }.ok_or("no SetCommandInfo")?;
    let summary = CString::new(command.summary).map_err(|e| e.to_string())?;
    let since = CString::new(SINCE).map_err(|e| e.to_string())?;
    let complexity = CString::new(command.complexity).map_err(|e| e.to_string())?;
    let mut arena = docs::Arena::default();
    let args = arena.args(command.args);
    let (key_specs, _key_specs_owner) = arena.key_specs(command.route, command.keys.is_some());
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: summary.as_ptr(),
        complexity: complexity.as_ptr(),
        since: since.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null::<c_char>(),
        arity: command.arity as c_int,
        key_specs,
        args,
    };
    // SAFETY: `cmd` is a command this module created; `info` and the
    // strings it points to outlive the call, which copies them.
    if unsafe { set_info(cmd, &info) } != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not set info of {}", command.name));
    }
    Ok(())
}

pub fn register_all(ctx: &Context) -> Status {
    for r in COMMANDS {
        if let Err(e) = create(ctx, r).and_then(|cmd| set_info(cmd, r.command)) {
            ctx.log_warning(&format!("okome: {e}"));
            return Status::Err;
        }
    }
    Status::Ok
}
