#!/usr/bin/env bash
# Run a command as root inside a throwaway copy of the cached RELEASE root, with a copy of this
# source tree at /src:
#
#   packaging/in-root.sh RELEASE [--bind HOST_DIR:ROOT_DIR]... -- COMMAND [ARG]...
#
# The cached root (packaging/release-root.sh) is the lower layer of an overlay; everything the
# command writes goes to an upper layer that is deleted afterwards, so the cache stays clean.
# The command runs in new PID and mount namespaces: when it exits, every process it left and
# every mount goes with them. The root shares the host's network (its apt and 127.0.0.1).
set -euo pipefail

release=${1:?usage: in-root.sh RELEASE [--bind HOST:ROOT]... -- COMMAND...}
shift
top=$(cd "$(dirname "$0")/.." && pwd)
binds=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
        --bind) binds+=("$2"); shift 2 ;;
        *) echo "in-root: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "${1:-}" = "--" ] && shift
[ "$#" -gt 0 ] || { echo "in-root: no command" >&2; exit 2; }

lower=$("$top/packaging/release-root.sh" "$release")
cache=$(dirname "$lower")
run=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
    # Only files are left here: the mounts died with the namespace.
    rm -rf --one-file-system "$run"
}
trap cleanup EXIT
mkdir -p "$run/upper" "$run/work" "$run/merged"

# The tree as git sees it (tracked and new files, ignored ones left out), not .venv or build/.
git -C "$top" ls-files -co --exclude-standard -z >"$run/files"
mkdir -p "$run/upper/src"
tar -C "$top" --null -T "$run/files" --ignore-failed-read -cf - 2>/dev/null | tar -C "$run/upper/src" -xf -

bind_script=""
for i in "${!binds[@]}"; do
    export "B_SRC_$i=${binds[$i]%%:*}" "B_DST_$i=${binds[$i]#*:}"
    bind_script+="mkdir -p \"\$M\$B_DST_$i\"; mount --bind \"\$B_SRC_$i\" \"\$M\$B_DST_$i\"; "
done

# The overlay is a mount point, so tests that unshare a mount namespace inside can make it private.
M="$run/merged" L="$lower" U="$run/upper" W="$run/work" \
    unshare --pid --fork --mount --propagation private -- bash -c '
    set -e
    mount -t overlay overlay -o "lowerdir=$L,upperdir=$U,workdir=$W" "$M"
    mount -t proc proc "$M/proc"
    mount --rbind /dev "$M/dev"
    mount --rbind /sys "$M/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$M/tmp"
    mount -t tmpfs -o mode=0755 tmpfs "$M/run"
    cp /etc/resolv.conf "$M/etc/resolv.conf"
    '"$bind_script"'
    # Not exec: this shell stays PID 1, so the command never has pid 1 (a test of LISTEN_PID
    # takes 1 to be another process) and orphans are reaped.
    set +e
    chroot "$M" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 CI="${CI:-}" sh -c "cd /src && exec \"\$@\"" sh "$@"
    exit $?' bash "$@"
