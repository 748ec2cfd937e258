//! Command registration through the raw module API: `CreateCommand` with
//! flags (`getkeys-api` for a command that declares keys), then
//! `SetCommandInfo` with arity, summary, version and key specs, and a
//! trampoline per command that answers Redis's key-position requests from
//! the tail of declared keys and turns a panic into an error reply instead
//! of aborting the server.

use crate::call::Call;
use crate::cmd::{agent, budget, cache, lock, plan};
use crate::docs;
use crate::reply::PANIC_REPLY;
use okome_core::args;
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
/// reply of `OKOME.RATE` and `OKOME.WBUDGET`, on the hot path.
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

/// Redis's arity error for `name` called with `n` arguments after its name,
/// if its arity refuses them. Redis checks the arity of the arguments it
/// receives, the tail of declared keys included; this checks the user's.
fn arity_error(name: &str, n: usize) -> Option<String> {
    let arity = COMMANDS.iter().find(|s| s.name == name)?.arity;
    let given = i64::try_from(n).ok()?.saturating_add(1);
    let want = i64::from(arity);
    let ok = if want < 0 {
        given >= -want
    } else {
        given == want
    };
    (!ok).then(|| format!("ERR wrong number of arguments for '{name}' command"))
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
    name: &'static str,
    declares: bool,
) -> c_int {
    if declares && keys_position_request(ctx) {
        let _ = catch_unwind(AssertUnwindSafe(|| report_keys(ctx, argv, argc)));
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
            if let Some(e) = arity_error(name, call.args.len()) {
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

macro_rules! trampoline {
    ($name:ident, $handler:path, $command:expr, $declares:expr) => {
        extern "C" fn $name(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            dispatch(ctx, argv, argc, $handler, $command, $declares)
        }
    };
}

trampoline!(t_plan_get, plan::plan_get, args::PLAN_GET, true);
trampoline!(t_plan_lookup, plan::plan_lookup, args::PLAN_LOOKUP, true);
trampoline!(t_plan_set, plan::plan_set, args::PLAN_SET, true);
trampoline!(t_lock, lock::lock, args::LOCK, true);
trampoline!(t_unlock, lock::unlock, args::UNLOCK, true);
trampoline!(t_cache_get, cache::cache_get, args::CACHE_GET, true);
trampoline!(t_cache_set, cache::cache_set, args::CACHE_SET, true);
trampoline!(t_key, cache::key, args::KEY, false);
trampoline!(t_rate, budget::rate, args::RATE, true);
trampoline!(t_wbudget, budget::wbudget, args::WBUDGET, true);
trampoline!(
    t_agent_record,
    agent::agent_record,
    args::AGENT_RECORD,
    true
);
trampoline!(t_agent_keys, agent::agent_keys, args::AGENT_KEYS, true);
trampoline!(t_agent_purge, agent::agent_purge, args::AGENT_PURGE, true);

type Callback =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// One command as registered.
pub struct Spec {
    pub name: &'static str,
    pub callback: Callback,
    pub flags: &'static str,
    pub arity: c_int,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub args: &'static [docs::Arg],
    /// The argument cluster clients route by (`NOT_KEY`), if any.
    pub key: Option<docs::KeyAt>,
    /// Whether the call touches keys, declared in the tail the command
    /// filter appends (every command but `OKOME.KEY`).
    pub declares: bool,
}

/// The full name of the okome command `name` (any case) if it declares
/// keys: what the command filter appends a tail to.
pub fn declaring(name: &[u8]) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|s| s.declares && s.name.as_bytes().eq_ignore_ascii_case(name))
        .map(|s| s.name)
}

pub const COMMANDS: &[Spec] = &[
    Spec {
        name: args::PLAN_GET,
        callback: t_plan_get,
        flags: "write",
        arity: -5,
        summary: "Looks up a plan by model, prompt (or its SHA-256 with HASHED), toolset and repo; on a miss takes the stampede lock",
        complexity: "O(N) in the prompt size (SHA-256; O(1) with HASHED), plus O(1) amortised with AGENT",
        args: docs::PLAN_GET,
        key: None,
        declares: true,
    },
    Spec {
        name: args::PLAN_LOOKUP,
        callback: t_plan_lookup,
        flags: "write",
        arity: -2,
        summary: "OKOME.PLAN.GET by planner key (from OKOME.KEY): the form cluster clients route by key",
        complexity: "O(1), plus O(1) amortised with AGENT",
        args: docs::PLAN_LOOKUP,
        key: Some(docs::LOOKUP_KEY),
        declares: true,
    },
    Spec {
        name: args::PLAN_SET,
        callback: t_plan_set,
        flags: "write deny-oom",
        arity: -3,
        summary: "Stores a plan as JSON under a planner key, with its TTL standard, and releases the lock",
        complexity: "O(N) in the plan size (JSON validation), plus O(log M) with AGENT for M entries in the agent's ledger, plus O(1) amortised with WLIMIT",
        args: docs::PLAN_SET,
        key: Some(docs::PLANNER_KEY),
        declares: true,
    },
    Spec {
        name: args::LOCK,
        callback: t_lock,
        flags: "write deny-oom fast",
        arity: -2,
        summary: "Acquires the stampede lock of a key, or extends a lock held with a token",
        complexity: "O(1)",
        args: docs::LOCK,
        key: Some(docs::LOCKED_KEY),
        declares: true,
    },
    Spec {
        name: args::UNLOCK,
        callback: t_unlock,
        flags: "write fast",
        arity: -3,
        summary: "Releases a stampede lock if it is held with the given token",
        complexity: "O(1)",
        args: docs::UNLOCK,
        key: Some(docs::LOCKED_KEY),
        declares: true,
    },
    Spec {
        name: args::RATE,
        callback: t_rate,
        flags: "write deny-oom fast",
        arity: -4,
        summary: "Charges an agent's exact sliding-window rate limit; a refused call consumes nothing",
        complexity: "O(1) amortised, whatever the limit (a refused call walks the entries until COST units fit)",
        args: docs::RATE,
        key: Some(docs::AGENT_ROUTE),
        declares: true,
    },
    Spec {
        name: args::WBUDGET,
        callback: t_wbudget,
        flags: "write deny-oom fast",
        arity: -3,
        summary: "Charges an agent's cache-write budget (an exact sliding window, 60 s by default)",
        complexity: "O(1) amortised, whatever the limit",
        args: docs::WBUDGET,
        key: Some(docs::AGENT_ROUTE),
        declares: true,
    },
    Spec {
        name: args::CACHE_GET,
        callback: t_cache_get,
        flags: "readonly fast",
        arity: -3,
        summary: "Reads a model_meta, rag, tools or health value and its remaining TTL",
        complexity: "O(1)",
        args: docs::CACHE_GET,
        key: Some(docs::PART_ROUTE),
        declares: true,
    },
    Spec {
        name: args::CACHE_SET,
        callback: t_cache_set,
        flags: "write deny-oom",
        arity: -4,
        summary: "Stores a model_meta, rag, tools or health value as JSON with its TTL standard",
        complexity: "O(N) in the value size (JSON validation), plus O(log M) with AGENT for M entries in the agent's ledger",
        args: docs::CACHE_SET,
        key: Some(docs::PART_ROUTE),
        declares: true,
    },
    Spec {
        name: args::KEY,
        callback: t_key,
        flags: "allow-stale",
        arity: -3,
        summary: "Returns the canonical okome key for a kind and its parts; touches no data",
        complexity: "O(N) in the size of the parts (SHA-256 of a planner prompt, none with HASHED)",
        args: docs::KEY,
        key: None,
        declares: false,
    },
    Spec {
        name: args::AGENT_RECORD,
        callback: t_agent_record,
        flags: "write deny-oom",
        arity: -3,
        summary: "Records a cache key an agent wrote in its ledger (okome:budget:keys:{agent}), with the key's expiry",
        complexity: "O(log N) for N entries in the ledger, plus O(E log N) for E expired entries pruned",
        args: docs::AGENT_RECORD,
        key: Some(docs::AGENT_ROUTE),
        declares: true,
    },
    Spec {
        name: args::AGENT_KEYS,
        callback: t_agent_keys,
        flags: "readonly",
        arity: -2,
        summary: "Lists an agent's live ledger entries, latest-expiring first, with remaining TTLs and states, paged",
        complexity: "O(log N + C) for C entries returned of N in the ledger",
        args: docs::AGENT_KEYS,
        key: Some(docs::AGENT_ROUTE),
        declares: true,
    },
    Spec {
        name: args::AGENT_PURGE,
        callback: t_agent_purge,
        flags: "write",
        arity: -2,
        summary: "Deletes the keys still holding an agent's writes (at most COUNT ledger entries per call), then its ledger",
        complexity: "O(C log N) for C entries looked at (COUNT, 1000 by default) of N in the ledger",
        args: docs::AGENT_PURGE,
        key: Some(docs::AGENT_ROUTE),
        declares: true,
    },
];

const SINCE: &str = "0.1.0";

fn register(ctx: &Context, spec: &Spec) -> Result<(), String> {
    let name = CString::new(spec.name).map_err(|e| e.to_string())?;
    let flags = if spec.declares {
        format!("{} getkeys-api", spec.flags)
    } else {
        spec.flags.to_string()
    };
    let flags = CString::new(flags).map_err(|e| e.to_string())?;
    let create = unsafe { raw::RedisModule_CreateCommand }.ok_or("no CreateCommand")?;
    // No legacy key positions: the keys are the tail's, which Redis asks
    // for through the getkeys API (and finds with the key specs).
    // SAFETY: valid C strings and a callback with the expected signature.
    let rc = unsafe {
        create(
            ctx.ctx,
            name.as_ptr(),
            Some(spec.callback),
            flags.as_ptr(),
            0,
            0,
            0,
        )
    };
    if rc != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not create command {}", spec.name));
    }
    let (Some(get), Some(set_info)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandInfo
    }) else {
        return Err("no SetCommandInfo".into());
    };
    // SAFETY: the command was just created under this name.
    let cmd = unsafe { get(ctx.ctx, name.as_ptr()) };
    if cmd.is_null() {
        return Err(format!("command {} not found after creation", spec.name));
    }
    let summary = CString::new(spec.summary).map_err(|e| e.to_string())?;
    let since = CString::new(SINCE).map_err(|e| e.to_string())?;
    let complexity = CString::new(spec.complexity).map_err(|e| e.to_string())?;
    let mut arena = docs::Arena::default();
    let args = arena.args(spec.name, spec.args);
    let (key_specs, _key_specs_owner) = arena.key_specs(spec.key, spec.declares);
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
        arity: spec.arity,
        key_specs,
        args,
    };
    // SAFETY: `info` and the strings it points to outlive the call, which
    // copies them.
    if unsafe { set_info(cmd, &info) } != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not set info of {}", spec.name));
    }
    Ok(())
}

pub fn register_all(ctx: &Context) -> Status {
    for spec in COMMANDS {
        if let Err(e) = register(ctx, spec) {
            ctx.log_warning(&format!("okome: {e}"));
            return Status::Err;
        }
    }
    Status::Ok
}
