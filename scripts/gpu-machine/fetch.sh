#!/usr/bin/env bash
# Fetch, on this (networked, GPU-less) machine, everything the GPU machine needs to run
# vkrama, into .gpu-carry/ (ignored by git), sized for its 64 MiB-per-call transfers:
#
#   .gpu-carry/pkgs/          Debian 12 debs (podman 4.3.1, runc, conmon, netavark, iptables,
#                             zstd), cp312 wheels of vkrama's dependencies, a wheel of vkrama
#                             itself, and SHA256SUMS of everything below       (~20 MB, 1 call)
#   .gpu-carry/IMAGE.NN       `podman save` of localhost/vkrama/IMAGE:latest, zstd -19, split
#                             into 55 MiB chunks                              (1 call per chunk)
#
# Idempotent: debs and wheels already there are kept, an image is re-saved only when its id
# changed, and the vkrama wheel is always rebuilt (it must be the checked-out code).
# Usage: scripts/gpu-machine/fetch.sh [IMAGE...]     (default: cuda cpu vulkan; run.sh's
# stages need `fetch.sh cuda vulkan`: cuda and vulkan/nvidia, models quantized in the cuda
# image; cpu for `check`'s CPU reference or a cpu cell). Each image is (re)built from this checkout first: a no-op
# when it is current.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry
PKGS=$CARRY/pkgs
CHUNK=55M
PY=${PY:-.venv/bin/python}
if (($#)); then IMAGES=("$@"); else IMAGES=(cuda cpu vulkan); fi
mkdir -p "$PKGS"

# podman as seen working there (ENVIRONMENT.md), plus bridge networking (netavark, iptables)
# and zstd for the image archives. Libraries the machine already has are not copied over
# its own by install.sh, so extra ones here are harmless.
DEBS=(podman conmon runc golang-github-containers-common golang-github-containers-image
      libgpgme11 libgpg-error0 libassuan0 libdevmapper1.02.1 libsubid4 catatonit libglib2.0-0 libseccomp2
      netavark aardvark-dns iptables libip4tc2 libip6tc2 libxtables12 libmnl0
      libnetfilter-conntrack3 libnfnetlink0 libnftnl11 zstd libsystemd0 libcap2 libgcrypt20)
missing=()
for deb in "${DEBS[@]}"; do
    compgen -G "$PKGS/${deb}_*.deb" >/dev/null || missing+=("$deb")
done
if ((${#missing[@]})); then
    (cd "$PKGS" && apt-get download "${missing[@]}")
fi

# vkrama's runtime dependencies at the versions tested here (httpx and its own: the
# load generator of `bench --serve`; nvidia-ml-py: NVML, bench's energy counter on NVIDIA
# GPUs, the `nvidia` extra, one pure-Python wheel). numpy is left out: the
# machine's python3 (3.12, PyTorch's) has numpy 2.x, and its wheel alone is 16 MB.
WHEELS=(podman gguf click requests urllib3 idna certifi charset-normalizer tabulate tqdm pyyaml
        httpx httpcore h11 anyio typing_extensions nvidia-ml-py)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
pins=()
for name in "${WHEELS[@]}"; do
    version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "fetch.sh: $name is not installed in $PY's environment" >&2; exit 1; }
    pins+=("$name==$version")
done
if [ "$(cat "$PKGS/wheels.txt" 2>/dev/null)" != "${pins[*]}" ]; then
    rm -f "$PKGS"/*.whl
    printf '%s\n' "${pins[@]}" > "$CARRY/wheels.req"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$PKGS" -r "$CARRY/wheels.req" 2>&1 \
        | { grep -v '^WARNING: Location' || true; }
    echo "${pins[*]}" > "$PKGS/wheels.txt"
fi
rm -f "$PKGS"/vkrama-*.whl
"$PY" -m pip wheel -q --no-deps -w "$PKGS" . 2>&1 | { grep -v '^WARNING: Location' || true; }

# The image store is shared on this machine: an image built from another checkout's older
# Containerfile (e.g. a vulkan image without glvnd's libEGL, which NVIDIA's Vulkan driver
# needs) must not travel. Building from this checkout is a no-op when the image matches it.
"$PY" -m vkrama images build "${IMAGES[@]}"
for image in "${IMAGES[@]}"; do
    ref=localhost/vkrama/$image:latest
    id=$(podman image inspect --format '{{.Id}}' "$ref")
    if [ "$(cat "$CARRY/$image.id" 2>/dev/null)" != "$id" ]; then
        rm -f "$CARRY/$image".[0-9][0-9] "$CARRY/$image.id"
        started=$(date +%s)
        podman save -q -o "$CARRY/$image.tar" "$ref"
        # --long=27: the layers repeat whole libraries' worth of code; a 128 MiB window finds it.
        zstd -q -19 -T0 --long=27 --rm -f "$CARRY/$image.tar" -o "$CARRY/$image.tar.zst"
        split -b "$CHUNK" -d -a 2 "$CARRY/$image.tar.zst" "$CARRY/$image."
        (cd "$CARRY" && sha256sum "$image.tar.zst" > "$image.sha256")
        rm "$CARRY/$image.tar.zst"
        echo "$id" > "$CARRY/$image.id"
        echo "fetch.sh: $ref saved and compressed in $(( $(date +%s) - started )) s"
    fi
done

# One checksum list travels with the packages; install.sh checks every chunk against it.
(
    cd "$CARRY"
    sha256sum pkgs/*.deb pkgs/*.whl > pkgs/SHA256SUMS.tmp
    # only this run's images: install.sh waits for the chunks of every image named here
    rm -f pkgs/*.id pkgs/*.sha256
    for image in "${IMAGES[@]}"; do
        sha256sum "$image".[0-9][0-9] >> pkgs/SHA256SUMS.tmp
        cp "$image.id" "$image.sha256" pkgs/
    done
    mv pkgs/SHA256SUMS.tmp pkgs/SHA256SUMS
)
echo "fetch.sh: $(du -sh "$PKGS" | cut -f1) of packages in $PKGS"
for image in "${IMAGES[@]}"; do
    total=$(cat "$CARRY/$image".[0-9][0-9] | wc -c)
    echo "fetch.sh: $image: $((total / 1048576)) MiB compressed in" \
        "$(ls "$CARRY/$image".[0-9][0-9] | wc -l) chunks:" $(ls "$CARRY/$image".[0-9][0-9])
done
