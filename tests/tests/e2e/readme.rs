//! README.md's walkthrough, run as written: the `sh` code blocks after a
//! `<!-- walkthrough -->` comment are read from README.md at test time and run in order, in
//! one `bash` with `set -euo pipefail`, against a fresh `wardenctl dev` (random ports, a
//! temporary data dir), with the variables dev printed exported — as a reader pastes them
//! into a second shell. A `# → TEXT` line in a block is output that block must print (`…`
//! stands for anything, whitespace runs compare equal). The code block after
//! `<!-- walkthrough: prints -->` lists the variables dev must print.
//!
//! The block after `<!-- walkthrough: tls -->` (the split planes over TLS and mTLS, with
//! `wardenctl certs dev`) runs on its own, without dev, in its own process group, with
//! free ports in `CP_PORT`, `DP_PORT` and `DP_OPS_PORT`; whatever it leaves running is
//! killed when it ends.
//!
//! The reader's `cargo run --release --bin wardenctl -- dev` is this test's
//! `target/debug/wardenctl dev`; `wardenctl` and `python3` (the interpreter with the official
//! SDKs, `WARDEN_TEST_PYTHON`) are on the `PATH`; provider keys are fakes (nothing here
//! calls a real provider).

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden_tests::cluster::{bin_dir, free_port, python};
use warden_tests::dev::DevGateway;

/// The longest the whole walkthrough may take.
const TIMEOUT_SECS: u64 = 180;
/// The longest the TLS walkthrough may take (well within nextest's 2 min).
const TLS_TIMEOUT_SECS: u64 = 60;

const WALKTHROUGH: &str = "<!-- walkthrough -->";
const TLS_WALKTHROUGH: &str = "<!-- walkthrough: tls -->";

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence in README.md.
    line: usize,
    text: String,
}

impl Block {
    /// `# → …` lines: output the block must print, as fragments between the `…`s.
    fn expected(&self) -> Vec<Vec<String>> {
        self.text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("# → "))
            .map(|e| e.split('…').map(squash).filter(|f| !f.is_empty()).collect())
            .collect()
    }
}

/// Whitespace runs as one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The fenced block following each line equal to `marker` (blank lines may sit between).
fn blocks_after(readme: &str, marker: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != marker {
            continue;
        }
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        assert!(
            j < lines.len() && lines[j].starts_with("```"),
            "README.md:{}: `{marker}` is not followed by a fenced block",
            i + 1
        );
        let end = (j + 1..lines.len())
            .find(|&k| lines[k].trim_end() == "```")
            .unwrap_or_else(|| panic!("README.md:{}: unclosed code block", j + 1));
        out.push(Block {
            line: j + 1,
            text: lines[j + 1..end].join("\n"),
        });
        if marker == WALKTHROUGH || marker == TLS_WALKTHROUGH {
            assert_eq!(
                lines[j].trim_end(),
                "```sh",
                "README.md:{}: walkthrough blocks are ```sh",
                j + 1
            );
        }
    }
    out
}

const BLOCK_MARK: &str = "@@readme-walkthrough-block@@";

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme_path = format!("{}/../README.md", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = blocks_after(&readme, WALKTHROUGH);
    assert!(
        blocks.len() >= 3,
        "README.md has lost its walkthrough markers: {blocks:?}"
    );
    let printed = blocks_after(&readme, "<!-- walkthrough: prints -->");
    assert_eq!(printed.len(), 1, "one `walkthrough: prints` block");

    let dir = tempfile::tempdir().unwrap();
    let dev_log = dir.path().join("dev.log");
    let dev = DevGateway::start(
        &dir.path().join(".warden"),
        free_port().unwrap(),
        free_port().unwrap(),
        Stdio::from(std::fs::File::create(&dev_log).unwrap()),
    );
    for name in printed[0]
        .text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
    {
        assert!(
            dev.vars.contains_key(name),
            "README.md:{}: says dev prints {name}, it printed {:?}",
            printed[0].line,
            dev.vars.keys()
        );
    }

    // `python3` is the interpreter with the official SDKs.
    let shims = dir.path().join("bin");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("python3");
    std::fs::write(&shim, format!("#!/bin/sh\nexec '{}' \"$@\"\n", python())).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}:{}",
        shims.display(),
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("printf '\\n{BLOCK_MARK} {i}\\n'\n"));
        script.push_str(&block.text);
        script.push('\n');
    }
    let script_path = dir.path().join("walkthrough.sh");
    std::fs::write(&script_path, &script).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new("timeout")
        .args(["--kill-after=5", &TIMEOUT_SECS.to_string(), "bash"])
        .arg(&script_path)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .envs(&dev.vars)
        .env("OPENAI_API_KEY", "sk-walkthrough-not-a-real-key")
        .env("ANTHROPIC_API_KEY", "sk-ant-walkthrough-not-a-real-key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    drop(dev);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // stdout split at the block marks: outputs[i] is what block i printed.
    let mut outputs: Vec<String> = Vec::new();
    for part in stdout.split(BLOCK_MARK).skip(1) {
        outputs.push(
            part.split_once('\n')
                .map_or("", |(_, rest)| rest)
                .to_owned(),
        );
    }
    let report = || {
        format!(
            "stdout:\n{stdout}\nstderr:\n{stderr}\nwardenctl dev's log:\n{}",
            std::fs::read_to_string(&dev_log).unwrap_or_default()
        )
    };
    if !out.status.success() {
        let failed = &blocks[outputs.len().saturating_sub(1)];
        panic!(
            "the walkthrough block at README.md:{} failed ({}{}):\n{}",
            failed.line,
            out.status,
            if out.status.code() == Some(124) {
                format!(", timed out after {TIMEOUT_SECS} s")
            } else {
                String::new()
            },
            report()
        );
    }
    assert_eq!(outputs.len(), blocks.len(), "{}", report());
    for (block, output) in blocks.iter().zip(&outputs) {
        assert_printed(block, output, &report);
    }
}

/// Fails unless `output` holds the block's `# → …` lines, in order.
fn assert_printed(block: &Block, output: &str, report: &dyn Fn() -> String) {
    let output = squash(output);
    let mut from = 0;
    for fragments in block.expected() {
        for fragment in fragments {
            match output[from..].find(&fragment) {
                Some(at) => from += at + fragment.len(),
                None => panic!(
                    "the walkthrough block at README.md:{} did not print `{fragment}` \
                     (after what it printed before):\n{}",
                    block.line,
                    report()
                ),
            }
        }
    }
}

#[test]
fn the_tls_walkthrough_runs_as_written() {
    let readme_path = format!("{}/../README.md", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = blocks_after(&readme, TLS_WALKTHROUGH);
    assert_eq!(
        blocks.len(),
        1,
        "one `{TLS_WALKTHROUGH}` block in README.md"
    );
    let block = &blocks[0];
    // What issue #13 asks the walkthrough to show; without these it would test less.
    for needle in [
        "wardenctl certs dev",
        "WARDEN_TLS_CLIENT_CA_FILE=",
        "--client-cert ./tls/admin.pem",
        "node credential issue --name edge-1 --client-cert ./tls/node.pem",
        "--cp-client-cert-file ./tls/node.pem",
        "--http-tls-cert-file ./tls/server.pem",
        "--cacert ./tls/ca.pem https://",
    ] {
        assert!(
            block.text.contains(needle),
            "README.md:{}: the TLS walkthrough no longer has `{needle}`",
            block.line
        );
    }
    assert!(
        !block.expected().is_empty(),
        "README.md:{}: the TLS walkthrough checks no output",
        block.line
    );

    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("tls-walkthrough.sh");
    std::fs::write(&script_path, format!("set -euo pipefail\n{}\n", block.text)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Output goes to files, not pipes: the servers it starts in the background hold them.
    let mut child = Command::new("timeout")
        .args(["--kill-after=5", &TLS_TIMEOUT_SECS.to_string(), "bash"])
        .arg(&script_path)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("CP_PORT", free_port().unwrap().to_string())
        .env("DP_PORT", free_port().unwrap().to_string())
        .env("DP_OPS_PORT", free_port().unwrap().to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let status = child.wait().unwrap();
    stop_process_group(group);
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = || format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.success(),
        "the TLS walkthrough at README.md:{} failed ({status}{}):\n{}",
        block.line,
        if status.code() == Some(124) {
            format!(", timed out after {TLS_TIMEOUT_SECS} s")
        } else {
            String::new()
        },
        report()
    );
    assert_printed(block, &stdout, &report);
}

/// Ends every process of the group `group` (what a walkthrough left running, e.g. after a
/// failed step): SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop_process_group(group: u32) {
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !signal("-TERM") {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while signal("-0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("-KILL");
}
