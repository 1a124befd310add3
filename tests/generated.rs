//! The committed completions/, man/ and README's exit codes are what the code generates now, and
//! they work.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn committed_completions_and_man_pages_are_fresh() {
    let generated = rmqlab::generate::files();
    let mut stale = Vec::new();
    for (path, contents) in &generated {
        match std::fs::read(Path::new(ROOT).join(path)) {
            Ok(committed) if committed == *contents => {}
            Ok(_) => stale.push(format!("{path} differs")),
            Err(_) => stale.push(format!("{path} is missing")),
        }
    }
    let expected: BTreeSet<&str> = generated.iter().map(|(path, _)| path.as_str()).collect();
    for dir in ["completions", "man"] {
        for entry in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let path = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            if !expected.contains(path.as_str()) {
                stale.push(format!("{path} is no longer generated"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "completions/man are stale: run scripts/generate and commit the result\n{}",
        stale.join("\n")
    );
}

#[test]
fn readme_lists_every_exit_code_from_the_one_table() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let fresh = rmqlab::generate::readme_with_exit_codes(&readme)
        .expect("README.md has the exit-codes markers");
    assert!(
        fresh == readme,
        "README.md's exit codes differ from src/exit.rs: run scripts/generate"
    );
    for code in rmqlab::exit::Code::ALL {
        let line = format!("| {} | {} |", code.value(), code.meaning());
        assert!(readme.contains(&line), "README.md lacks {line}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_rmqlab"))
        .arg("--help")
        .output()
        .unwrap();
    for code in rmqlab::exit::Code::ALL {
        let value = code.value().to_string();
        assert!(
            String::from_utf8_lossy(&help.stdout)
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{value} "))),
            "--help lacks exit code {value}"
        );
    }
}

#[test]
fn completions_command_prints_the_committed_script() {
    let output = Command::new(env!("CARGO_BIN_EXE_rmqlab"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let committed = std::fs::read(Path::new(ROOT).join("completions/rmqlab.bash")).unwrap();
    assert_eq!(output.stdout, committed);
}

/// PATH with the directory of the rmqlab under test first: the completion scripts call
/// `rmqlab` to answer each Tab.
fn path_with_rmqlab() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_rmqlab")).parent().unwrap();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// What bash completes for `line` (completing its last word) after sourcing the script.
fn bash_complete(line: &str) -> String {
    let script = r#"
        source completions/rmqlab.bash
        read -ra COMP_WORDS <<< "$1"
        [[ "$1" == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="$1"; COMP_POINT=${#1}
        _clap_complete_rmqlab rmqlab "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        echo "${COMPREPLY[*]}"
    "#;
    let output = Command::new("bash")
        .current_dir(ROOT)
        .env("PATH", path_with_rmqlab())
        .args(["-c", script, "bash", line])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn bash_completion_registers_and_completes() {
    let output = Command::new("bash")
        .current_dir(ROOT)
        .args(["-c", "source completions/rmqlab.bash && complete -p rmqlab"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(bash_complete("rmqlab ta"), "task");
    let words: Vec<String> = bash_complete("rmqlab task ")
        .split(' ')
        .map(str::to_string)
        .collect();
    assert!(
        words.contains(&"new".to_string()) && words.contains(&"work".to_string()),
        "{words:?}"
    );
    assert_eq!(bash_complete("rmqlab queues list -o "), "table tsv json");
}

/// zsh and fish are installed by scripts/test where apt-get can; a missing one fails here.
#[test]
fn zsh_and_fish_scripts_parse() {
    for (shell, file) in [
        ("zsh", "completions/_rmqlab"),
        ("fish", "completions/rmqlab.fish"),
    ] {
        let output = Command::new(shell)
            .current_dir(ROOT)
            .args(["-n", file])
            .output()
            .unwrap_or_else(|e| {
                panic!("{shell} is needed to check {file} ({e}); scripts/test installs it")
            });
        assert!(
            output.status.success(),
            "{shell} -n {file}: {}",
            text(&output)
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    for entry in std::fs::read_dir(Path::new(ROOT).join("man")).unwrap() {
        let path = entry.unwrap().path();
        let output = Command::new("groff")
            .args(["-ww", "-man", "-Tutf8", "-z"])
            .arg(&path)
            .output()
            .expect("groff (from Debian's groff-base) renders the man pages");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{}: {}",
            path.display(),
            text(&output)
        );
    }
    let output = Command::new("man")
        .env("MANWIDTH", "80")
        .args(["-l", "man/rmqlab-task-work.1"])
        .current_dir(ROOT)
        .output()
        .expect("man");
    let page = String::from_utf8_lossy(&output.stdout);
    for option in ["--prefetch", "--dot-duration", "--exec", "EXAMPLES"] {
        assert!(
            page.contains(option),
            "rmqlab-task-work.1 lacks {option}:\n{page}"
        );
    }
    let output = Command::new("man")
        .env("MANWIDTH", "80")
        .args(["-l", "man/rmqlab.1"])
        .current_dir(ROOT)
        .output()
        .expect("man");
    let page = String::from_utf8_lossy(&output.stdout);
    for section in [
        "EXIT STATUS",
        "ENVIRONMENT",
        "EXAMPLES",
        "RMQLAB_URL",
        "AMQP_URL",
        "RMQLAB_API_URL",
        "NO_COLOR",
        "130",
    ] {
        assert!(page.contains(section), "rmqlab.1 lacks {section}:\n{page}");
    }
}
