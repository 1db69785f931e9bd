#!/usr/bin/env bash
# A private Docker Engine for the container tests: Debian's dockerd on its own socket, data-root and exec-root
# under DIR, with a busybox test image built on the spot (no registry is reachable from the test machines).
#   scripts/dockerd.sh up DIR     -> socket DIR/docker.sock, image busybox:canopy-test, rootfs DIR/busybox-rootfs.tar,
#                                    image archive DIR/busybox-image.tar (docker save format, for `load` tests)
#   scripts/dockerd.sh down DIR   -> removes its containers, stops it
set -euo pipefail
cmd=${1:?usage: dockerd.sh up|down DIR}
K=${2:?usage: dockerd.sh up|down DIR}
S="$K/docker.sock"
api() { curl -sf --unix-socket "$S" "$@"; }

case "$cmd" in
up)
    mkdir -p "$K/data" "$K/exec"
    if [ -f "$K/dockerd.pid" ] && kill -0 "$(cat "$K/dockerd.pid")" 2>/dev/null; then
        "$0" down "$K"
    fi
    rm -f "$S"
    # --bridge=none: containers get loopback only unless a test asks for another network; no iptables rules.
    # Started with no descriptor but 0-2 (a caller that reads this script's output through a pipe gets its EOF).
    (
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done
        exec dockerd --data-root "$K/data" --exec-root "$K/exec" --pidfile "$K/dockerd.pid" -H "unix://$S" \
            --storage-driver=overlay2 --bridge=none --iptables=false --ip6tables=false \
            --default-ulimit nofile=20000:20000 --default-ulimit nproc=32768:32768 </dev/null >"$K/dockerd.log" 2>&1
    ) &
    for _ in $(seq 150); do
        [ -S "$S" ] && api http://x/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    api http://x/_ping >/dev/null || { tail -20 "$K/dockerd.log"; exit 1; }
    # The test image: busybox-static's one binary and its applet links, a passwd with root and nobody.
    R=$(mktemp -d)
    mkdir -p "$R/bin" "$R/tmp" "$R/etc" "$R/root" "$R/home"
    chmod 1777 "$R/tmp"
    cp "$(command -v busybox)" "$R/bin/busybox"
    for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n' >"$R/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
    tar -C "$R" -cf "$K/busybox-rootfs.tar" .
    rm -rf "$R"
    api -X POST -H 'Content-Type: application/x-tar' --data-binary @"$K/busybox-rootfs.tar" \
        "http://x/v1.41/images/create?fromSrc=-&repo=busybox&tag=canopy-test" >/dev/null
    api "http://x/v1.41/images/get?names=busybox:canopy-test" >"$K/busybox-image.tar"
    echo "dockerd up: unix://$S (image busybox:canopy-test)"
    ;;
down)
    if [ -S "$S" ]; then
        for c in $(api 'http://x/v1.41/containers/json?all=1' | python3 -c 'import json,sys; print(" ".join(c["Id"] for c in json.load(sys.stdin)))' 2>/dev/null); do
            api -X DELETE "http://x/v1.41/containers/$c?force=1" >/dev/null || true
        done
    fi
    if [ -f "$K/dockerd.pid" ]; then
        pid=$(cat "$K/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # containerd-shim processes of this engine, if any were left.
    pkill -f "containerd-shim.*$K/exec" 2>/dev/null || true
    umount "$K/data/overlay2"/*/merged 2>/dev/null || true
    umount "$K/exec"/*/netns/* 2>/dev/null || true
    # dockerd bind-mounts its data root onto itself; that mount stays after it exits.
    umount "$K/data" 2>/dev/null || true
    rm -f "$S"
    ;;
*)
    echo "usage: dockerd.sh up|down DIR" >&2
    exit 2
    ;;
esac
