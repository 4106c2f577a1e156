//! The shell snippets behind file operations: POSIX sh, GNU and busybox userlands alike,
//! so the same code serves SSH hosts and this machine.

use std::borrow::Cow;

/// `'it'\''s'`: one argument for the remote shell.
pub fn quote(arg: &str) -> String {
    shell_escape::unix::escape(Cow::Borrowed(arg)).into_owned()
}

/// `sh -c 'SCRIPT' harun ARG...`, with `sudo -n` in front when asked.
pub fn script(script: &str, args: &[&str], sudo: bool) -> String {
    let mut out = String::new();
    if sudo {
        out.push_str("sudo -n ");
    }
    out.push_str("sh -c ");
    out.push_str(&quote(script));
    out.push_str(" harun");
    for arg in args {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

/// A user's command, under `sudo -n sh -c` when asked.
pub fn command(command: &str, sudo: bool) -> String {
    if sudo {
        format!("sudo -n sh -c {}", quote(command))
    } else {
        command.to_string()
    }
}

/// Exit status for "the file does not exist" (EX_NOINPUT).
pub const MISSING: i32 = 66;

/// `$1`'s content, or exit 66 when it does not exist. A file we may not even look at
/// (in a directory we cannot enter) is not "missing": `cat` then reports why.
pub const READ: &str = r#"if [ -e "$1" ]; then exec cat -- "$1"; fi
d=$(dirname -- "$1")
while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done
if [ -r "$d" ] && [ -x "$d" ]; then exit 66; fi
exec cat -- "$1""#;

/// The shell function `dead_writes DIR`: prints this user's `.harun.PID.XXXXXX`
/// directories in DIR whose writing shell is gone (a write killed with its shell, between
/// `mktemp` and the removal of its directory, left them). A zombie counts as gone, and so
/// does a process that started after the directory last changed: its PID was reused
/// (pid_max is 32768 on many machines). Nothing is followed through a symlink.
macro_rules! dead_writes {
    () => {
        r#"started() { s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1; set -- $s; echo $(( boot + ${20} / ticks )); }
writer_alive() {
  [ -r "/proc/$1/stat" ] || { kill -0 "$1" 2>/dev/null; return; }
  ! grep -q ') [ZX] ' "/proc/$1/stat" || return 1
  start=$(started "$1") || return 1
  [ "$start" -le "$(stat -c %Y -- "$2")" ]
}
dead_writes() {
  boot=$(sed -n 's/^btime //p' /proc/stat 2>/dev/null); boot=${boot:-0}; ticks=$(getconf CLK_TCK 2>/dev/null || echo 100)
  for old in "$1"/.harun.[0-9]*.??????; do
    [ -d "$old" ] && [ ! -L "$old" ] || continue
    pid=${old##*/.harun.}; pid=${pid%%.*}
    case $pid in ''|*[!0-9]*) continue ;; esac
    [ "$(stat -c %u -- "$old")" = "$(id -u)" ] || continue
    ! writer_alive "$pid" "$old" || continue
    printf '%s\n' "$old"
  done
}"#
    };
}

/// Prints what killed writes left beside the file `$1` (see `dead_writes!`): a read.
pub const DEAD_WRITES: &str = concat!(
    dead_writes!(),
    r#"
dead_writes "$(dirname -- "$1")""#
);

/// Removes what killed writes left beside the file `$1`, and prints it.
pub const CLEAR_DEAD_WRITES: &str = concat!(
    dead_writes!(),
    r#"
dead_writes "$(dirname -- "$1")" | while IFS= read -r old; do rm -rf -- "$old" && printf '%s\n' "$old"; done"#
);

/// Writes stdin to `$1` atomically, where another user may own the directory (a service
/// user owns its config directory in the packaged installs) and so may swap any name in it:
/// - the new file is made, filled and given its mode and owner (`$2` mode, `$3` owner,
///   `$4` group; empty keeps the old file's, or 0644) inside a fresh directory of our own
///   (`mktemp -d`, 0700), checked to be that directory after `cd`, so no chmod or chown
///   can be steered through a planted symlink;
/// - the old file is kept (when `$5` is 1) as `$1.harun-$6.bak`, or `$1.harun-$6-$8.bak`
///   when that name is taken, by a hard link: the old file itself, made through no name
///   that exists, so a symlink planted under the backup's name leads nowhere;
/// - the rename happens only when all `$7` bytes arrived: a harun killed mid-write closes
///   the pipe early, and the shell, which outlives it, must not put a short file in place;
///   its working directory goes too, even when the shell dies of the broken pipe (its
///   message to a dead harun) or a hangup, which would skip a bare EXIT trap;
/// - what killed writes left in the directory goes first (`dead_writes!`).
pub const WRITE: &str = concat!(
    dead_writes!(),
    r#"
set -e
target=$1 mode=$2 owner=$3 group=$4 backup=$5 stamp=$6 size=$7 rand=$8
[ -d "$(dirname -- "$target")" ] || { echo "directory $(dirname -- "$target") does not exist" >&2; exit 1; }
case $target in /*) ;; *) target=$PWD/$target ;; esac
dir=$(dirname -- "$target")
dead_writes "$dir" | while IFS= read -r old; do rm -rf -- "$old"; done
work=$(mktemp -d "$dir/.harun.$$.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cd -P -- "$work"
[ "$(stat -c %u:%a .)" = "$(id -u):700" ] || { echo "$work changed while harun wrote $target: left as it was" >&2; exit 1; }
set -C
cat > "new.$rand"
got=$(wc -c < "new.$rand")
[ "$got" -eq "$size" ] || { echo "the content was cut short ($got of $size bytes): $target left as it was" >&2; exit 1; }
# owner "." : the writer's (a secret never goes to the old file's owner).
if [ "$owner" = . ]; then owner=$(id -u); [ -n "$group" ] || group=$(id -g); fi
if [ -e "$target" ]; then
  [ -n "$mode" ] || mode=$(stat -L -c %a -- "$target")
  [ -n "$owner" ] || owner=$(stat -L -c %u -- "$target")
  [ -n "$group" ] || group=$(stat -L -c %g -- "$target")
  if [ "$backup" = 1 ]; then
    bak="$target.harun-$stamp.bak"
    if [ -e "$bak" ] || [ -L "$bak" ]; then bak="$target.harun-$stamp-$rand.bak"; fi
    ln -- "$target" "$bak"
  fi
fi
chmod "${mode:-644}" "new.$rand"
if [ -n "$owner$group" ]; then chown "$owner${group:+:$group}" "new.$rand"; fi
mv -f -- "new.$rand" "$target"
trap - EXIT
cd /
rmdir -- "$work" 2>/dev/null || true"#
);

/// Whether anything under `$1` has another owner than `$2` (or group `$3`): prints it (or
/// `unreadable`); exit 1 for a missing path, 2 for an unknown user.
pub const FOREIGN_OWNED: &str = r#"[ -e "$1" ] || exit 1
id -u -- "$2" >/dev/null 2>&1 || exit 2
find "$1" ! -user "$2" -print -quit 2>/dev/null || echo unreadable
[ -z "$3" ] || find "$1" ! -group "$3" -print -quit 2>/dev/null"#;

/// `chown -R owner[:group] path`, never through a symlink at `path` (chown -R follows
/// none below it).
pub const CHOWN_R: &str = r#"[ ! -L "$1" ] || { echo "$1 is a symbolic link: harun changes no owner through it" >&2; exit 1; }
chown -R -- "$2${3:+:$3}" "$1""#;

/// Renames `$1` to `$2`, or to `$2.1`, `$2.2`, ... when that name is taken; prints the
/// name it chose. `mv -n`: never onto anything that exists.
pub const SET_ASIDE: &str = r#"set -e
t="$2"; i=1
while [ -e "$t" ]; do t="$2.$i"; i=$((i+1)); done
mv -n -- "$1" "$t"
[ ! -e "$1" ]
printf '%s' "$t""#;

/// `mkdir -p $1`, then owner `$2`, group `$3` and mode `$4` when given: on the directory
/// itself, entered and checked to be the one at `$1`, so a symlink that another user
/// planted there (in a directory that user owns) cannot turn a chown on a file of root's.
pub const MKDIR: &str = r#"set -e
mkdir -p -- "$1"
[ -n "$2$3$4" ] || exit 0
[ ! -L "$1" ] || { echo "$1 is a symbolic link: harun changes no owner or mode through it" >&2; exit 1; }
parent=$(cd -P -- "$(dirname -- "$1")" && pwd -P)
cd -P -- "$1"
[ "$(pwd -P)" = "${parent%/}/$(basename -- "$1")" ] || { echo "$1 changed while harun made it" >&2; exit 1; }
if [ -n "$2$3" ]; then chown -h "$2${3:+:$3}" .; fi
if [ -n "$4" ]; then chmod "$4" .; fi"#;

/// The shell command that prints `marker` on stdout and on stderr.
pub fn greeting_command(marker: &str) -> String {
    format!("printf '%s' '{marker}'; printf '%s' '{marker}' >&2")
}

/// A fresh greeting marker for a session of one command.
pub fn greeting_marker() -> String {
    format!("\x1eharun-{}:", random_token())
}

/// What came after `marker`: the command's own output, without what the login printed
/// before the shell started. Output without the marker (the shell never got that far) is
/// kept whole.
pub fn after_greeting(mut output: Vec<u8>, marker: &str) -> Vec<u8> {
    if let Some(at) = memchr::memmem::find(&output, marker.as_bytes()) {
        output.drain(..at + marker.len());
    }
    output
}

/// 128 random bits: enough that no command's output carries the marker by chance.
pub fn random_token() -> String {
    use harun_runtime::private_fs::random_hex;
    format!("{}{}", random_hex(), random_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_without_the_greeting_is_kept_whole() {
        assert_eq!(
            after_greeting(b"syntax error\n".to_vec(), "\x1eG:"),
            b"syntax error\n"
        );
        assert_eq!(
            after_greeting(b"banner\x1eG:out".to_vec(), "\x1eG:"),
            b"out"
        );
    }
}
