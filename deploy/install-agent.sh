#!/usr/bin/env bash
# Installs the askee node agent as a hardened systemd service and walks the
# volunteer through consent. Consent is never silent: without a terminal the
# installer grants only when --yes and every limit flag are given, otherwise
# it stops before granting and says how to grant.
#
#   deploy/install-agent.sh --coordinator https://coordinator.example.org
#   deploy/install-agent.sh --no-consent                   # files only
#   deploy/install-agent.sh --root /tmp/img --no-consent   # into a root dir
#   deploy/install-agent.sh ... --update-repo https://coord.example/tuf \
#       --trusted-root 1.root.json                         # signed self-update
#
# Run it again at any time: every step checks what is already there.
set -euo pipefail

prog=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: $prog [options]

Installs askee-agent and askee-agent-worker as one version in
/var/lib/askee-agent (versions/<version>/ and the symlink current, which the
agent may switch when it updates itself), the askee system user, the
askee-agent systemd unit and the state directory /var/lib/askee, then runs
\`askee-agent init\`, \`join\` and the consent review.

options:
  --root DIR         install into DIR as the file system root (like DESTDIR):
                     no user is created on this host and nothing is started;
                     the user comes from DIR/usr/lib/sysusers.d/askee.conf
                     when DIR boots
  --prefix DIR       installation prefix (default /usr/local): PREFIX/bin gets
                     a symlink askee-agent -> /var/lib/askee-agent/current/
                     askee-agent for the command line
  --bin DIR          directory holding the built askee-agent and
                     askee-agent-worker (default: target/release of this
                     checkout)
  --coordinator URL  coordinator to join (https; http only to loopback)
  --no-consent       install only; print the next steps instead of joining
  --update-repo URL  turn signed self-updates on from this TUF repository
                     (askee-server serve --tuf-repo; e.g. URL/tuf); needs
  --trusted-root F   the repository's root metadata (1.root.json from
                     \`askee-server release init\`), obtained out of band.
                     Without both, updates stay off.
  consent limits, passed to \`askee-agent consent grant\` (without a terminal
  all of them and --yes are required):
  --cpu-percent N  --ram-mb N  --storage-gb N  --bandwidth-mbps N
  --task-types A,B  --days N  --yes
  -h, --help         this text
EOF
}

die() {
    echo "$prog: error: $*" >&2
    exit 2
}

root=""
prefix="/usr/local"
bin_dir="$script_dir/../target/release"
coordinator=""
no_consent=0
update_repo=""
trusted_root=""
yes=0
grant_args=()
limits_given=()

need_value() {
    [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) need_value "$@"; root="$2"; shift 2 ;;
        --prefix) need_value "$@"; prefix="$2"; shift 2 ;;
        --bin) need_value "$@"; bin_dir="$2"; shift 2 ;;
        --coordinator) need_value "$@"; coordinator="$2"; shift 2 ;;
        --no-consent) no_consent=1; shift ;;
        --update-repo) need_value "$@"; update_repo="$2"; shift 2 ;;
        --trusted-root) need_value "$@"; trusted_root="$2"; shift 2 ;;
        --cpu-percent | --ram-mb | --storage-gb | --bandwidth-mbps | --task-types | --days)
            need_value "$@"
            grant_args+=("$1" "$2")
            [ "$1" = --days ] || limits_given+=("$1")
            shift 2
            ;;
        --yes) yes=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

# --- checks before touching anything -------------------------------------
case "$prefix" in
    /*) ;;
    *) die "--prefix must be an absolute path, got '$prefix'" ;;
esac
prefix=${prefix%/}
if [ -n "$root" ]; then
    mkdir -p "$root" || die "cannot create the root directory '$root'"
    root=$(cd "$root" && pwd)
    [ "$root" = / ] && root=""
fi
[ -d "$bin_dir" ] || die "--bin '$bin_dir' is not a directory (build with: cargo build --release -p askee-agent --bins)"
bin_dir=$(cd "$bin_dir" && pwd)
for b in askee-agent askee-agent-worker; do
    [ -f "$bin_dir/$b" ] && [ -x "$bin_dir/$b" ] ||
        die "$bin_dir/$b is missing or not executable (build with: cargo build --release -p askee-agent --bins)"
done
version=$("$bin_dir/askee-agent" --version 2>/dev/null | awk '{print $NF}') || true
[[ "$version" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] ||
    die "$bin_dir/askee-agent --version does not report a MAJOR.MINOR.PATCH version (got '$version')"
if [ -n "$update_repo" ] || [ -n "$trusted_root" ]; then
    [ -n "$update_repo" ] && [ -n "$trusted_root" ] ||
        die "--update-repo and --trusted-root go together (the repository and the root that signs it)"
    case "$update_repo" in
        http://* | https://*) ;;
        *) die "--update-repo must be an http(s) URL, got '$update_repo'" ;;
    esac
    [ -f "$trusted_root" ] || die "--trusted-root '$trusted_root' is not a file"
    trusted_root=$(cd "$(dirname "$trusted_root")" && pwd)/$(basename "$trusted_root")
fi
if [ "$no_consent" = 0 ] && [ -z "$coordinator" ]; then
    die "--coordinator URL is needed to join and review consent (or pass --no-consent to install only)"
fi
if [ "$no_consent" = 1 ] && { [ -n "$coordinator" ] || [ ${#grant_args[@]} -gt 0 ] || [ "$yes" = 1 ]; }; then
    die "--no-consent installs only: it cannot be combined with --coordinator, --yes or limit flags"
fi
if [ "$yes" = 1 ]; then
    missing=()
    for f in --cpu-percent --ram-mb --storage-gb --bandwidth-mbps --task-types; do
        printf '%s\n' "${limits_given[@]}" | grep -qx -- "$f" || missing+=("$f")
    done
    [ ${#missing[@]} -eq 0 ] ||
        die "--yes grants without asking, so every limit must be given; missing: ${missing[*]}"
fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "installing on this host needs root (creates a system user and a systemd unit); use --root DIR to install into a directory"
fi
[ -f "$script_dir/askee-agent.service" ] || die "$script_dir/askee-agent.service is missing (run the installer from the askee checkout)"

bindir="$prefix/bin"
state_dir=/var/lib/askee
# The agent's own, agent-writable install directory (a second
# StateDirectory of the unit): versions/<v>/{askee-agent,askee-agent-worker}
# and current -> versions/<v>. The agent updates itself by adding a version
# and renaming a new current symlink over the old one.
install_dir=/var/lib/askee-agent
unit_path=/etc/systemd/system/askee-agent.service
sysusers_path=/usr/lib/sysusers.d/askee.conf

step() { echo "==> $*"; }

# --- files ---------------------------------------------------------------
# Installs $1 as $2 with mode $3 atomically (a running agent keeps its open
# binary; the next start gets the new one).
install_file() {
    local src=$1 dest=$2 mode=$3
    mkdir -p "$(dirname "$dest")"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        return 0
    fi
    install -m "$mode" "$src" "$dest.new.$$"
    mv -f "$dest.new.$$" "$dest"
}

step "binaries → $root$install_dir/versions/$version (current)"
mkdir -p "$root$install_dir/versions"
chmod 0700 "$root$install_dir"
version_dir="$root$install_dir/versions/$version"
mkdir -p "$version_dir"
chmod 0755 "$version_dir"
install_file "$bin_dir/askee-agent" "$version_dir/askee-agent" 0755
install_file "$bin_dir/askee-agent-worker" "$version_dir/askee-agent-worker" 0755
# Switch current with one rename of a new symlink (a running agent keeps
# its binaries; the next start gets this version), unless the agent already
# updated itself to a newer version: a re-run never downgrades it.
current_link=$(readlink "$root$install_dir/current" 2>/dev/null || true)
current_version=${current_link#versions/}
if [ -n "$current_link" ] && [ "$current_version" != "$version" ] &&
    [[ "$current_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] &&
    [ -x "$root$install_dir/$current_link/askee-agent" ] &&
    [ "$(printf '%s\n%s\n' "$version" "$current_version" | sort -V | tail -n 1)" = "$current_version" ]; then
    echo "keeping the newer version $current_version the agent updated itself to (installed $version beside it)"
elif [ "$current_link" != "versions/$version" ]; then
    ln -sfn "versions/$version" "$root$install_dir/.current.new.$$"
    mv -Tf "$root$install_dir/.current.new.$$" "$root$install_dir/current"
fi
# The command line: a symlink through current (an earlier flat install's
# copies are replaced; the worker is found beside the resolved agent).
mkdir -p "$root$bindir"
if [ "$(readlink "$root$bindir/askee-agent" 2>/dev/null || true)" != "$install_dir/current/askee-agent" ]; then
    ln -sfn "$install_dir/current/askee-agent" "$root$bindir/.askee-agent.new.$$"
    mv -Tf "$root$bindir/.askee-agent.new.$$" "$root$bindir/askee-agent"
fi
rm -f "$root$bindir/askee-agent-worker"

step "system user askee → $root$sysusers_path"
sysusers_tmp=$(mktemp)
trap 'rm -f "$sysusers_tmp"' EXIT
cat >"$sysusers_tmp" <<'EOF'
# askee volunteer-computing agent: an unprivileged system user that owns
# /var/lib/askee (node key, consent state, audit journal, task scratch).
u askee - "askee volunteer-computing agent" /var/lib/askee /usr/sbin/nologin
EOF
install_file "$sysusers_tmp" "$root$sysusers_path" 0644

step "systemd unit → $root$unit_path"
unit_tmp=$(mktemp)
trap 'rm -f "$sysusers_tmp" "$unit_tmp"' EXIT
sed "s|@INSTALLDIR@|$install_dir|g" "$script_dir/askee-agent.service" >"$unit_tmp"
install_file "$unit_tmp" "$root$unit_path" 0644

step "state directory → $root$state_dir"
mkdir -p "$root$state_dir"
chmod 0700 "$root$state_dir"

if [ -z "$root" ]; then
    if ! getent passwd askee >/dev/null; then
        if command -v systemd-sysusers >/dev/null; then
            systemd-sysusers "$sysusers_path"
        else
            useradd --system --user-group --home-dir "$state_dir" \
                --shell /usr/sbin/nologin --comment "askee volunteer-computing agent" askee
        fi
    fi
    getent passwd askee >/dev/null || die "the askee user could not be created"
    chown -R askee:askee "$state_dir" "$install_dir"
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

# Runs askee-agent with the installed binary and the installed home, as the
# askee user on this host, as the caller inside --root.
agent() {
    if [ -z "$root" ]; then
        runuser -u askee -- env ASKEE_AGENT_HOME="$state_dir" HOME="$state_dir" \
            "$install_dir/current/askee-agent" "$@"
    else
        "$root$install_dir/current/askee-agent" --home "$root$state_dir" "$@"
    fi
}

if [ -n "$update_repo" ]; then
    step "signed self-update from $update_repo"
    if [ -z "$root" ]; then
        # The askee user may not read the caller's file: a copy it owns.
        root_copy="$state_dir/.update-root.in"
        install -o askee -g askee -m 0600 "$trusted_root" "$root_copy"
        agent update configure --repository "$update_repo" --trusted-root "$root_copy"
        rm -f "$root_copy"
    else
        agent update configure --repository "$update_repo" --trusted-root "$trusted_root"
    fi
else
    echo "updates: off (no --update-repo and --trusted-root); the agent is updated by running this installer again"
fi

# The command a person runs on the installed system (for --root: once it boots;
# the node key must be created there, never baked into an image).
as_user_hint() {
    echo "sudo -u askee $install_dir/current/askee-agent --home $state_dir $*"
}

start_hint() {
    echo "systemctl enable --now askee-agent"
}

where_hint() {
    if [ -n "$root" ]; then
        echo " (on the system booted from $root)"
    fi
}

if [ "$no_consent" = 1 ]; then
    cat <<EOF

askee-agent is installed; no identity, no join, no consent yet. Next steps$(where_hint):
  $(as_user_hint init)
  $(as_user_hint join '<coordinator-url>')
  $(as_user_hint consent review)
  $(as_user_hint consent grant)
  $(start_hint)
(or run this installer again with --coordinator URL)
EOF
    exit 0
fi

step "node identity"
agent init
if [ -n "$root" ]; then
    echo "note: the node key was created in $root$state_dir; a root with a key must not be copied to other machines (build images with --no-consent)"
fi

# Already granted on an earlier run (and still active): nothing to ask again.
granted=0
if status_out=$(agent status 2>&1); then
    if grep -Eq '^token [^ ]+: active$' <<<"$status_out"; then
        granted=1
    fi
else
    die "cannot check the existing consent (askee-agent status): $status_out"
fi
if [ "$granted" = 1 ]; then
    echo "$status_out"
    echo "consent already granted; change it with \`askee-agent revoke\` and a new grant"
else
    # join fetches the coordinator's capability manifest, checks its digest
    # and shows it in plain words: the same review `consent review` prints.
    step "join $coordinator and review what it asks for"
    agent join "$coordinator"
    if [ "$yes" = 1 ]; then
        step "consent grant (limits given on the command line)"
        agent consent grant --yes "${grant_args[@]}"
    elif [ -t 0 ]; then
        step "consent grant (you will be asked)"
        agent consent grant "${grant_args[@]}"
    else
        cat >&2 <<EOF

$prog: consent not granted: consent needs an explicit answer, and there is no
terminal to ask on. askee-agent is installed and joined, but will take no
work. Grant in a terminal$(where_hint) with
  $(as_user_hint consent grant)
or re-run this installer with --yes and every limit:
  $prog --coordinator $coordinator --yes --cpu-percent N --ram-mb N \\
      --storage-gb N --bandwidth-mbps N --task-types A,B [--days N]
EOF
        exit 3
    fi
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    step "start askee-agent"
    systemctl enable --now askee-agent
    echo "askee-agent is running; see \`systemctl status askee-agent\`, stop lending with \`askee-agent revoke\`"
else
    echo
    echo "askee-agent is installed with consent granted. Start it$(where_hint) with: $(start_hint)"
fi
