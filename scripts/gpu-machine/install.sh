#!/usr/bin/env bash
# Runs ON the GPU machine (as root, in the repo copy the device tool sends): makes it a host
# vkrama supports — podman 4.3.1 from the carried Debian 12 debs, vkrama and its wheels, the
# CDI spec nvidia-ctk would write, and the carried images loaded into podman's storage.
#
#   install.sh base           podman, containers.conf/storage.conf/policy.json, vkrama, CDI
#   install.sh chunk PATH     move one carried image chunk out of the repo copy, print its sum
#   install.sh images         check every chunk, reassemble, `podman load`, probe networking
#   install.sh all            base + images
#
# Every step is idempotent (markers under $STATE), so a repeated call on a warm machine is
# cheap. Nothing here is vkrama-specific magic: vkrama then finds the GPU the way it does on
# any host (/sys PCI + /dev/nvidia* + /etc/cdi).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry
STATE=/var/tmp/vkrama-gpu          # outside the repo copy: survives the next call's sync
CHUNKS=$STATE/chunks
POD=/opt/pod
SITE=/opt/vkrama-site
mkdir -p "$STATE" "$CHUNKS"
log() { echo "install.sh: $*"; }

base() {
    [ -d "$CARRY/pkgs" ] || { log "no $CARRY/pkgs: carry it in this call"; exit 1; }
    (cd "$CARRY" && sha256sum -c --quiet <(grep ' pkgs/' pkgs/SHA256SUMS))
    mkdir -p "$STATE/pkgs"
    cp -a "$CARRY/pkgs/." "$STATE/pkgs/"
    if [ ! -e "$STATE/podman.done" ]; then
        for deb in "$STATE"/pkgs/*.deb; do dpkg-deb -x "$deb" "$POD"; done
        # podman starts conmon with a clean environment: LD_LIBRARY_PATH would not reach it,
        # so libraries go where ld.so looks. Only those the machine lacks: its own newer
        # glib, seccomp or systemd must not be shadowed by Debian 12's.
        mkdir -p /usr/local/lib/vkrama-pod
        find "$POD"/lib "$POD"/usr/lib -path '*/xtables' -prune -o -name 'lib*.so*' \
                \( -type f -o -type l \) -print 2>/dev/null |
            while read -r lib; do
                name=$(basename "$lib")
                ldconfig -p | grep -q "^[[:space:]]*$name " || cp -a "$lib" /usr/local/lib/vkrama-pod/
            done
        echo /usr/local/lib/vkrama-pod > /etc/ld.so.conf.d/zz-vkrama-pod.conf
        ldconfig
        ln -sf "$POD/usr/bin/podman" /usr/local/bin/podman
        ln -sf "$POD/usr/bin/zstd" /usr/local/bin/zstd
        mkdir -p /usr/share/containers /etc/containers
        cp -r --update=none "$POD/usr/share/containers/." /usr/share/containers/ 2>/dev/null \
            || cp -rn "$POD/usr/share/containers/." /usr/share/containers/
        # iptables loads its match/target extensions from a compiled-in directory.
        xt=/usr/lib/x86_64-linux-gnu/xtables
        [ -e "$xt" ] || ln -s "$POD$xt" "$xt"
        # iptables for netavark's bridge: whichever backend this kernel has (nft or legacy).
        for multi in xtables-nft-multi xtables-legacy-multi; do
            if "$POD/usr/sbin/$multi" iptables -t nat -L -n >/dev/null 2>&1; then
                for tool in iptables ip6tables iptables-save iptables-restore; do
                    ln -sf "$POD/usr/sbin/$multi" "/usr/local/sbin/$tool"
                done
                log "iptables: $multi works"
                break
            fi
        done
        write_configs bridge
        touch "$STATE/podman.done"
    fi
    podman --version
    missing=$(for b in "$POD/usr/bin/podman" "$POD/usr/bin/conmon" "$POD/usr/sbin/runc" \
                       "$POD/usr/lib/podman/netavark"; do ldd "$b" 2>&1 | grep 'not found'; done || true)
    [ -z "$missing" ] || { log "unresolved libraries: $missing"; exit 1; }
    if ! podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupsVersion}}' ; then
        log "overlay failed; falling back to vfs"
        rm -rf /var/lib/containers/storage /run/containers/storage  # empty yet; it remembers overlay
        sed -i 's/^driver = .*/driver = "vfs"/' /etc/containers/storage.conf
        podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}}'
    fi

    if [ ! -e "$STATE/wheels.done" ] || ! cmp -s "$STATE/pkgs/SHA256SUMS" "$STATE/wheels.done"; then
        rm -rf "$SITE"
        # Byte-compiled as any pip install is: without it every vkrama start compiles
        # requests, urllib3 and click from source (~0.2 s, seen in a profile there).
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade \
            --target "$SITE" "$STATE"/pkgs/*.whl
        cp "$STATE/pkgs/SHA256SUMS" "$STATE/wheels.done"
    fi
    # The caller's PYTHONPATH first: run.sh puts the vkrama that travelled with its call there.
    printf '#!/bin/sh\nPYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}%s exec %s -m vkrama "$@"\n' \
        "$SITE" "$(command -v python3)" > /usr/local/bin/vkrama
    chmod +x /usr/local/bin/vkrama
    vkrama --version

    PYTHONPATH=$SITE python3 scripts/gpu-machine/nvidia_cdi.py --output /etc/cdi/nvidia.yaml
    log "CDI: $(grep -c hostPath /etc/cdi/nvidia.yaml) mounts, devices:" \
        "$(PYTHONPATH=$SITE python3 -c 'import yaml;print(*[d["name"] for d in yaml.safe_load(open("/etc/cdi/nvidia.yaml"))["devices"]])')"
}

write_configs() {  # $1: bridge or host (the default network namespace)
    cat > /etc/containers/containers.conf <<EOF
# written by vkrama's scripts/gpu-machine/install.sh
[containers]
# no CAP_SYS_RESOURCE here: podman's default nofile/nproc cannot be set
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
$([ "$1" = host ] && echo 'netns = "host"  # bridge networking failed its probe here')

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"   # no systemd here
events_logger = "file"
conmon_path = ["$POD/usr/bin/conmon"]
helper_binaries_dir = ["$POD/usr/lib/podman", "$POD/usr/libexec/podman"]

[engine.runtimes]
runc = ["$POD/usr/sbin/runc"]

[network]
network_backend = "netavark"
EOF
    cat > /etc/containers/storage.conf <<'EOF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
    [ -e /etc/containers/policy.json ] || \
        echo '{"default": [{"type": "insecureAcceptAnything"}]}' > /etc/containers/policy.json
    [ -e /etc/containers/registries.conf ] || echo 'unqualified-search-registries = []' \
        > /etc/containers/registries.conf
}

chunk() {  # $1: a carried chunk path, e.g. .gpu-carry/cuda.03
    [ -f "$1" ] || { log "$1 did not arrive"; exit 1; }
    mv "$1" "$CHUNKS/"
    ls -l "$CHUNKS/$(basename "$1")"
    sha256sum "$CHUNKS/$(basename "$1")"
}

images() {
    sums=$STATE/pkgs/SHA256SUMS
    for idfile in "$STATE"/pkgs/*.id; do
        image=$(basename "$idfile" .id)
        want=$(cat "$idfile")
        if podman image exists "$want" 2>/dev/null; then log "$image: loaded already"; continue; fi
        (cd "$CHUNKS" && grep " $image\.[0-9][0-9]\$" "$sums" | sha256sum -c --quiet) \
            || { log "$image: chunks missing or damaged:"; ls -l "$CHUNKS"; exit 1; }
        started=$(date +%s)
        cat "$CHUNKS/$image".[0-9][0-9] | zstd -d -q --long=27 -o "$STATE/$image.tar" -f
        podman load -q -i "$STATE/$image.tar"
        rm -f "$STATE/$image.tar"
        log "$image: loaded in $(( $(date +%s) - started )) s"
    done
    podman images
    probe_network
}

probe_network() {
    # Bridge networking needs netavark, iptables and netfilter in this kernel. If a port
    # published on 127.0.0.1 does not answer, use the host's network namespace instead:
    # llama-server's fixed container port 8080 is then the host port (serve --port 8080).
    [ -e "$STATE/network" ] && { log "network: $(cat "$STATE/network")"; return; }
    image=$(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/vkrama/' | head -1)
    mode=host
    # The probe server reads the request before it answers and keeps accepting: closing a
    # socket with unread data sends a reset that can beat the answer to the client, which
    # made a working bridge look broken (2026-11-24: host fallback on the first run).
    if podman run -d --rm --name vkrama-netprobe -p 127.0.0.1:18080:8080 "$image" perl \
        -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>5,ReuseAddr=>1) or die;
            while ($c=$s->accept) { while (<$c>) { last if /^\r?$/ }
                print $c "HTTP/1.0 200 OK\r\n\r\nbridge-ok"; close $c }' >/dev/null 2>"$STATE/netprobe.err"
    then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            if python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:18080", timeout=1).read().decode())' 2>/dev/null | grep -q bridge-ok; then
                mode=bridge; break
            fi
            sleep 0.5
        done
        if [ "$mode" = host ]; then  # keep what explains it for the log
            { podman logs vkrama-netprobe; podman port vkrama-netprobe; iptables -t nat -S;
              sysctl net.ipv4.conf.all.route_localnet; } >>"$STATE/netprobe.err" 2>&1
            log "bridge: port 18080 on 127.0.0.1 did not answer: $(tr '\n' ' ' <"$STATE/netprobe.err" | cut -c1-600)"
        fi
        podman rm -f vkrama-netprobe >/dev/null 2>&1 || true
    else
        log "bridge network failed: $(tail -1 "$STATE/netprobe.err")"
    fi
    [ "$mode" = bridge ] || write_configs host
    echo "$mode" > "$STATE/network"
    log "network: $mode"
}

case "${1:-all}" in
    base) base ;;
    chunk) shift; for path in "$@"; do chunk "$path"; done ;;
    images) images ;;
    all) base; images ;;
    *) echo "usage: install.sh base|chunk PATH...|images|all" >&2; exit 2 ;;
esac
