#!/usr/bin/env bash
# Builds the Debian package of the service (cargo deb -p serialine), checks
# its contents and control data, installs it with dpkg into a clean root,
# checks files, owners and modes, removes it (configuration and secrets
# stay), purges it (nothing of them stays). CI runs this after clippy.
#
# The package is built with the dev profile (`--profile dev`, stripped):
# a release build of the service takes minutes on CI's two cores, and what
# is checked here (files, owners, modes, maintainer scripts) does not depend
# on the profile. Release packages: `cargo deb -p serialine`.
#
# The clean root: dpkg --root=DIR with an empty admin directory, maintainer
# scripts run without chroot (--force-script-chrootless, DPKG_ROOT=DIR),
# which the scripts honour by passing --root to systemd-sysusers and
# systemd-tmpfiles; dependencies are not installed there (--force-depends).
# Needs root (owners), dpkg, systemd-sysusers and systemd-tmpfiles.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "packaging/deb/check.sh: FAILED: $*" >&2; exit 1; }

if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked cargo-deb
fi
for tool in dpkg dpkg-deb systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null || fail "$tool not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/serialine-deb-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo deb --locked -p serialine --profile dev --strip --fast -o "$work/" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; fail "cargo deb"; }
deb=$(ls "$work"/serialine_*.deb)
echo "built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

# --- The archive: what is in it, with which modes -------------------------
dpkg-deb -I "$deb" >"$work/info"
dpkg-deb -c "$deb" >"$work/contents"
grep -q '^ Package: serialine$' "$work/info" || fail "package name"
grep -q '^ Depends: .*systemd' "$work/info" || fail "Depends lacks systemd"
for script in postinst prerm postrm; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$script " "$work/info" || fail "no executable $script"
done
expect_file() { # mode path
    grep -qE "^$1 0/0 .* \./$2\$" "$work/contents" || fail "archive lacks $2 with mode $1"
}
expect_file -rwxr-xr-x usr/bin/serialine
expect_file -rw-r--r-- usr/lib/systemd/system/serialine.service
expect_file -rw-r--r-- usr/lib/sysusers.d/serialine.conf
expect_file -rw-r--r-- usr/lib/tmpfiles.d/serialine.conf
expect_file -rw-r--r-- etc/serialine/serialine.toml
expect_file -rw-r--r-- usr/share/serialine/grafana/serialine.json
# The lab (simulators, broker) is never installed on a line.
if grep -q 'serialine-lab' "$work/contents"; then fail "serialine-lab in the package"; fi
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles"
grep -qx /etc/serialine/serialine.toml "$work/conffiles" || fail "serialine.toml is not a conffile"
echo "archive: $(grep -c . "$work/contents") entries, conffiles: $(tr '\n' ' ' <"$work/conffiles")"

# --- Install into a clean root ---------------------------------------------
root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --force-depends \
        --log="$work/dpkg.log" "$@"
}
dpkg_root -i "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i"; }

uid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$root/etc/passwd"; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$root/etc/group"; }
user=$(uid_of serialine)
group=$(gid_of serialine)
[ -n "$user" ] || fail "no user serialine in the root's /etc/passwd"
[ -n "$group" ] || fail "no group serialine in the root's /etc/group"
awk -F: '$1 == "dialout"' "$root/etc/group" | grep -q 'serialine' || fail "serialine not in dialout"
awk -F: '$1 == "serialine" { exit !($6 == "/var/lib/serialine") }' "$root/etc/passwd" \
    || fail "serialine's home is not /var/lib/serialine"

expect() { # path mode uid gid
    [ -e "$root/$1" ] || fail "$1 not installed"
    got=$(stat -c '%a %u %g' "$root/$1")
    [ "$got" = "$2 $3 $4" ] || fail "$1: mode/uid/gid $got, expected $2 $3 $4"
}
expect usr/bin/serialine 755 0 0
expect usr/lib/systemd/system/serialine.service 644 0 0
expect usr/lib/sysusers.d/serialine.conf 644 0 0
expect usr/lib/tmpfiles.d/serialine.conf 644 0 0
expect etc/serialine 750 0 "$group"
expect etc/serialine/serialine.toml 644 0 0
expect var/lib/serialine 750 "$user" "$group"
"$root/usr/bin/serialine" --version >/dev/null || fail "the installed binary does not run"
grep -q '^ExecStart=/usr/bin/serialine run --config /etc/serialine/serialine.toml' \
    "$root/usr/lib/systemd/system/serialine.service" || fail "unit's ExecStart"
echo "installed: user serialine ($user:$group), /etc/serialine 0750 root:serialine, /var/lib/serialine 0750 serialine:serialine"

# What an operator adds: a line secret, and what the service writes.
secret="serialine-deb-check-secret-$$-$RANDOM$RANDOM"
install -m 0600 -o "$user" -g "$group" /dev/null "$root/etc/serialine/line-1.secret"
printf '%s\n' "$secret" >"$root/etc/serialine/line-1.secret"
mkdir -p "$root/var/lib/serialine/ledger/line-1" "$root/var/lib/serialine/fence"
printf '%s\n' "$secret" >"$root/var/lib/serialine/ledger/line-1/db"
printf 'edited\n' >>"$root/etc/serialine/serialine.toml"

# --- Remove: the binary goes, configuration, secrets and state stay -------
dpkg_root -r serialine >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/serialine" ] || fail "remove left /usr/bin/serialine"
[ -f "$root/etc/serialine/line-1.secret" ] || fail "remove deleted the line secret"
[ -f "$root/etc/serialine/serialine.toml" ] || fail "remove deleted the conffile"
[ -d "$root/var/lib/serialine/ledger" ] || fail "remove deleted the ledger"

# --- Purge: no secret, no configuration, no state stays -------------------
dpkg_root --purge serialine >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge"; }
[ ! -e "$root/etc/serialine" ] || fail "purge left /etc/serialine: $(ls -la "$root/etc/serialine")"
[ ! -e "$root/var/lib/serialine" ] || fail "purge left /var/lib/serialine"
if grep -rqs --exclude-dir=dpkg -- "$secret" "$root"; then
    fail "the secret is still in the root: $(grep -rls -- "$secret" "$root")"
fi
if dpkg_root -s serialine 2>/dev/null | grep -q '^Status: install'; then fail "still installed"; fi
left=$(cd "$root" && find . -path ./var/lib/dpkg -prune -o -path ./var/log -prune -o -type f -print | sort)
echo "purged: nothing of /etc/serialine or /var/lib/serialine left; files left in the root: ${left//$'\n'/ }"
echo "packaging/deb/check.sh: OK"
