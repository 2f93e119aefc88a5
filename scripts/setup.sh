#!/usr/bin/env bash
# Make a fresh Debian/Ubuntu machine ready for vkrama: podman with runc, ulimits that fit
# under the host's hard limits, Debian's registry/skopeo for the OCI pull tests, a locally
# bootstrapped debian:sid base image (no container registry needs to be reachable), and a
# virtualenv in .venv with vkrama and its test tools. Idempotent. Needs root or sudo.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

cd "$(dirname "$0")/.."
# slirp4netns: rootless podman's network (serve publishes a port); catatonit: podman's
# --init binary (ramalama, the benchmark harness's peer, runs every container with --init).
# chromium + chromium-driver: the report tests open the HTML report in a real headless browser.
need=(podman runc slirp4netns catatonit mmdebstrap docker-registry skopeo uidmap python3-venv
      procps openssl curl chromium chromium-driver)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# crun fails on hybrid cgroup hosts; runc works. podman's default rlimits exceed the hard
# limits of sandboxes without CAP_SYS_RESOURCE, so ask for what the host allows.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nproc" = unlimited ] && nproc=65536
[ "$nofile" -gt 65536 ] && nofile=65536
[ "$nproc" -gt 4096 ] && nproc=4096  # above ~32k runc is refused here, whatever ulimit -Hu says
# Only into vkrama's own drop-in, and only what no file of the administrator sets already:
# a user's containers.conf is never written (see scripts/podman_conf.py).
$SUDO python3 scripts/podman_conf.py --nofile "$nofile" --nproc "$nproc"

base=docker.io/library/debian:sid
if ! podman image exists "$base"; then
  echo "setup: bootstrapping $base with mmdebstrap (no registry reachable)"
  tmp=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase \
    --aptopt='Acquire::Check-Valid-Until "false"' sid "$tmp/base.tar"
  podman import --quiet "$tmp/base.tar" "$base" >/dev/null
  rm -rf "$tmp"
fi
if [ ! -x .venv/bin/vkrama ] || [ pyproject.toml -nt .venv/bin/vkrama ]; then
  echo "setup: installing vkrama, its charts extra and its test tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
  touch .venv/bin/vkrama
fi
echo "setup: $(podman --version), $(.venv/bin/vkrama --version)"
