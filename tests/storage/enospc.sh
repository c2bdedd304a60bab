#!/usr/bin/env bash
# Runs storage-enospc on a real full disk: a 1 MiB tmpfs, grown to 32 MiB
# once the writer stalls. Needs root (mount); without it the test is
# reported as skipped (exit 77), never as passed.
set -u
bin=$1
mnt=$(mktemp -d /tmp/craft-enospc.XXXXXX)
cleanup() {
    umount "$mnt" 2>/dev/null
    rmdir "$mnt"
}
trap cleanup EXIT
if ! mount -t tmpfs -o size=1m craft-enospc "$mnt" 2>/dev/null; then
    echo "skipped: cannot mount a tmpfs here (needs root)"
    exit 77
fi
"$bin" "$mnt/data" "mount -o remount,size=32m $mnt"
