//! examples/python/okome_demo.py and the Python that runs it, for the
//! tests that run the demo (tests/it/python_client.rs, tests/it/readme.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/okome_demo.py")
}

/// The first interpreter that can `import redis`: `$OKOME_PYTHON` alone if
/// set, else Debian's `/usr/bin/python3`, else `python3` on the PATH.
pub fn python() -> String {
    let candidates: Vec<String> = match std::env::var("OKOME_PYTHON") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => ["/usr/bin/python3", "python3"]
            .into_iter()
            .filter(|p| !p.starts_with('/') || Path::new(p).exists())
            .map(String::from)
            .collect(),
    };
    let mut tried = Vec::new();
    for p in &candidates {
        match Command::new(p)
            .args(["-c", "import redis, sys; print(redis.__version__)"])
            .output()
        {
            Ok(o) if o.status.success() => return p.clone(),
            Ok(o) => tried.push(format!(
                "{p}: cannot import redis ({})",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => tried.push(format!("{p}: {e}")),
        }
    }
    panic!(
        "no Python with redis-py to run {}:\n  {}\n\
         install it with `make deps` (Debian: apt-get install python3 python3-redis) \
         or `python3 -m pip install redis`, or point OKOME_PYTHON at an interpreter that has it",
        script().display(),
        if tried.is_empty() {
            "no python3 found".to_string()
        } else {
            tried.join("\n  ")
        }
    );
}

pub fn run_demo(url: &str) -> Output {
    let py = python();
    Command::new(&py)
        .arg(script())
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("run {py}: {e}"))
}
