//! `COMMAND DOCS` / `COMMAND INFO` data: arguments and key specs of every
//! command, declared once and turned into the raw structs that
//! `RedisModule_SetCommandInfo` copies. A numeric argument's summary (its
//! range, unit and default) comes from the range table,
//! `okome_core::config::ARGS`.

use okome_core::declared::Access;
use redis_module::raw;
use std::ffi::{c_char, c_int, CString};
use std::ptr;

/// Argument types (a subset of `RedisModuleCommandArgType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Key,
    PureToken,
    OneOf,
    Block,
}

/// One argument as `COMMAND DOCS` shows it.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    pub ty: Ty,
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    pub sub: &'static [Arg],
}

pub const fn arg(name: &'static str, ty: Ty) -> Arg {
    Arg {
        name,
        ty,
        token: None,
        optional: false,
        multiple: false,
        sub: &[],
    }
}

impl Arg {
    pub const fn token(mut self, t: &'static str) -> Arg {
        self.token = Some(t);
        self
    }
    pub const fn optional(mut self) -> Arg {
        self.optional = true;
        self
    }
    pub const fn multiple(mut self) -> Arg {
        self.multiple = true;
        self
    }
    pub const fn sub(mut self, s: &'static [Arg]) -> Arg {
        self.sub = s;
        self
    }
}

/// The key (or routing argument) at a position and what the command does
/// to it.
#[derive(Debug, Clone, Copy)]
pub struct KeyAt {
    pub pos: c_int,
    pub flags: u32,
    pub notes: &'static str,
}

/// Owns the C strings and arrays handed to Redis until it has copied them.
#[derive(Default)]
pub struct Arena {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl Arena {
    fn cstr(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    fn opt(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.cstr(s))
    }

    /// A zero-terminated array of `args` of `command`; the pointer stays
    /// valid while the arena lives.
    pub fn args(&mut self, command: &str, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        if args.is_empty() {
            return ptr::null_mut();
        }
        let mut out = Vec::with_capacity(args.len() + 1);
        for a in args {
            let sub = self.args(command, a.sub);
            let summary = okome_core::config::arg_summary(command, a.name);
            let ty = match a.ty {
                Ty::Str => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                Ty::Int => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                Ty::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                Ty::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
                Ty::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
                Ty::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
            };
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if a.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if a.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            out.push(raw::RedisModuleCommandArg {
                name: self.cstr(a.name),
                type_: ty,
                key_spec_index: if a.ty == Ty::Key { 0 } else { -1 },
                token: self.opt(a.token),
                summary: self.opt(summary.as_deref()),
                since: ptr::null(),
                flags: flags as c_int,
                deprecated_since: ptr::null(),
                subargs: sub,
                display_text: ptr::null(),
            });
        }
        // SAFETY: an all-zero RedisModuleCommandArg is the array terminator.
        out.push(unsafe { std::mem::zeroed() });
        let p = out.as_mut_ptr();
        self.arrays.push(out);
        p
    }

    /// The zero-terminated key-spec array of a command: its routing
    /// argument (`NOT_KEY`: what cluster clients route by) if any, then,
    /// for a command that declares keys, one spec per group of the tail of
    /// declared keys (`okome_core::declared`): the keyword, searched from
    /// the last argument back, then the number of keys, then the keys.
    pub fn key_specs(
        &mut self,
        route: Option<KeyAt>,
        declares: bool,
    ) -> (
        *mut raw::RedisModuleCommandKeySpec,
        Vec<raw::RedisModuleCommandKeySpec>,
    ) {
        let mut v = Vec::with_capacity(5);
        if let Some(k) = route {
            let notes = self.cstr(k.notes);
            v.push(raw::RedisModuleCommandKeySpec {
                notes,
                flags: u64::from(k.flags),
                begin_search_type:
                    raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
                bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                    index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 {
                        pos: k.pos,
                    },
                },
                find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
                fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                    range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                        lastkey: 0,
                        keystep: 1,
                        limit: 0,
                    },
                },
            });
        }
        if declares {
            for access in Access::ALL {
                let notes = self.cstr(group_notes(access));
                let keyword = self.cstr(access.keyword());
                v.push(raw::RedisModuleCommandKeySpec {
                    notes,
                    flags: u64::from(key_flags(access)),
                    begin_search_type:
                        raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_KEYWORD,
                    bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                        keyword: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_2 {
                            keyword,
                            startfrom: -1,
                        },
                    },
                    find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_KEYNUM,
                    fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                        keynum: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_2 {
                            keynumidx: 0,
                            firstkey: 1,
                            keystep: 1,
                        },
                    },
                });
            }
        }
        if v.is_empty() {
            return (ptr::null_mut(), v);
        }
        // SAFETY: an all-zero key spec is the array terminator.
        v.push(unsafe { std::mem::zeroed() });
        let p = v.as_mut_ptr();
        (p, v)
    }
}

/// The key-spec flags of a group of declared keys, as Redis's ACL reads
/// them: `ACCESS` needs read permission (`%R~`), `UPDATE` write (`%W~`).
pub fn key_flags(access: Access) -> u32 {
    match access {
        Access::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        Access::Write => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
        Access::ReadWrite => {
            raw::REDISMODULE_CMD_KEY_RW
                | raw::REDISMODULE_CMD_KEY_ACCESS
                | raw::REDISMODULE_CMD_KEY_UPDATE
        }
    }
}

fn group_notes(access: Access) -> &'static str {
    match access {
        Access::Read => "keys the call reads (appended by okome's command filter)",
        Access::Write => {
            "keys the call writes without returning them (appended by okome's command filter)"
        }
        Access::ReadWrite => "keys the call reads and writes (appended by okome's command filter)",
    }
}

use Ty::*;

const AGENT_BLOCK: &[Arg] = &[
    arg("agent", Str).token("AGENT"),
    arg("limit", Int).token("LIMIT"),
    arg("window", Int).token("WINDOW"),
];
const LOCK_CHOICE: &[Arg] = &[
    arg("lockttl", Int).token("LOCKTTL"),
    arg("nolock", PureToken).token("NOLOCK"),
];

pub const PLAN_GET: &[Arg] = &[
    arg("model", Str),
    arg("prompt", Str),
    arg("toolset_version", Str),
    arg("repo_hash", Str),
    // The second argument is the prompt's SHA-256 (64 lowercase hex digits).
    arg("hashed", PureToken).token("HASHED").optional(),
    arg("rate", Block).optional().sub(AGENT_BLOCK),
    arg("lock", OneOf).optional().sub(LOCK_CHOICE),
    arg("wait", Int).token("WAIT").optional(),
    arg("refreshahead", Int).token("REFRESHAHEAD").optional(),
];

const WBUDGET_BLOCK: &[Arg] = &[
    arg("wlimit", Int).token("WLIMIT"),
    arg("wwindow", Int).token("WWINDOW").optional(),
];

/// `AGENT id [WLIMIT n [WWINDOW s]]`: record the plan in the agent's
/// ledger, and optionally charge its write budget.
const PLAN_SET_AGENT: &[Arg] = &[
    arg("agent", Str).token("AGENT"),
    arg("wbudget", Block).optional().sub(WBUDGET_BLOCK),
];

pub const PLAN_SET: &[Arg] = &[
    arg("key", Key),
    arg("plan_json", Str),
    arg("ttl", Int).token("TTL").optional(),
    arg("token", Str).token("TOKEN").optional(),
    arg("agent", Block).optional().sub(PLAN_SET_AGENT),
];

pub const LOCK: &[Arg] = &[
    arg("key", Key),
    arg("ttl", Int).token("TTL").optional(),
    arg("token", Str).token("TOKEN").optional(),
];

pub const UNLOCK: &[Arg] = &[arg("key", Key), arg("token", Str)];

pub const RATE: &[Arg] = &[
    arg("agent", Str),
    arg("limit", Int),
    arg("window", Int),
    arg("cost", Int).token("COST").optional(),
];

pub const WBUDGET: &[Arg] = &[
    arg("agent", Str),
    arg("write_limit", Int),
    arg("window", Int).token("WINDOW").optional(),
    arg("cost", Int).token("COST").optional(),
];

pub const CACHE_GET: &[Arg] = &[arg("kind", Str), arg("part", Str).multiple()];

pub const CACHE_SET: &[Arg] = &[
    arg("kind", Str),
    arg("part", Str).multiple(),
    arg("value_json", Str),
    arg("ttl", Int).token("TTL").optional(),
    arg("agent", Str).token("AGENT").optional(),
];

pub const KEY: &[Arg] = &[arg("kind", Str), arg("part", Str).multiple()];

pub const AGENT_RECORD: &[Arg] = &[
    arg("agent", Str),
    arg("key", Str),
    arg("pxat", Int).token("PXAT").optional(),
];

pub const AGENT_KEYS: &[Arg] = &[
    arg("agent", Str),
    arg("count", Int).token("COUNT").optional(),
    arg("cursor", Str).token("CURSOR").optional(),
];

pub const AGENT_PURGE: &[Arg] = &[
    arg("agent", Str),
    arg("count", Int).token("COUNT").optional(),
];

pub const PLAN_LOOKUP: &[Arg] = &[
    arg("key", Key),
    arg("rate", Block).optional().sub(AGENT_BLOCK),
    arg("lock", OneOf).optional().sub(LOCK_CHOICE),
    arg("wait", Int).token("WAIT").optional(),
    arg("refreshahead", Int).token("REFRESHAHEAD").optional(),
];

pub const LOOKUP_KEY: KeyAt = KeyAt {
    pos: 1,
    flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY,
    notes: "the planner key: routes the command in a cluster; declared with its lock key:lock in the appended tail",
};
/// Not a key: the agent, routed as the hash tag of its window.
pub const AGENT_ROUTE: KeyAt = KeyAt {
    pos: 1,
    flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY,
    notes: "the agent id: the hash tag of okome:budget:*:{agent}; routes the command in a cluster (the keys themselves are declared in the appended tail)",
};
/// Not a key: the first part, routed as the hash tag of the cache key.
pub const PART_ROUTE: KeyAt = KeyAt {
    pos: 2,
    flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY,
    notes: "the first part: the hash tag of the cache key; routes the command in a cluster (the key itself is declared in the appended tail)",
};
pub const PLANNER_KEY: KeyAt = KeyAt {
    pos: 1,
    flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY,
    notes: "the planner key: routes the command in a cluster; declared (with its lock key:lock under TOKEN) in the appended tail",
};
/// `OKOME.LOCK`/`OKOME.UNLOCK`: the protected key routes; only its lock
/// `key:lock` is touched, and declared.
pub const LOCKED_KEY: KeyAt = KeyAt {
    pos: 1,
    flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY,
    notes: "the protected key: routes the command in a cluster; its lock key:lock, the only key touched, is declared in the appended tail",
};
