#!/bin/sh
# Prints what a benchmark comparison needs to know about this image, as one JSON object:
# the llama.cpp build, the ggml version and the versions of the backend's stack, read
# from dpkg and from llama.cpp itself at build time (not guessed later from tags).
#
# usage: provenance.sh BACKEND [KEY=PACKAGE_GLOB | KEY==VALUE ...]
#   e.g. provenance.sh vulkan mesa=mesa-vulkan-drivers vulkan_loader=libvulkan1
#   KEY==VALUE records VALUE itself (an image that compiles llama.cpp has no package to
#   ask: its ggml_version, gfx_targets); it replaces a default key of the same name.
set -eu

backend=$1
shift

# Versions and commit hashes only ever need these characters; dropping the rest keeps the
# printf-built JSON valid whatever a tool prints.
clean() { tr -cd 'A-Za-z0-9.+~:/_,-'; }

# The version of the first installed package matching a glob (empty when none is).
version_of() {
    dpkg-query -W -f '${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null \
        | awk '$1 == "ii" { print $2; exit }' | clean
}

# llama.cpp prints "version: 11669 (0123abcd)" when built upstream and
# "version: 0.7.0 (build 11669, commit Debian)" when built by Debian; record the line as
# printed (quotes and backslashes dropped) and the build number and commit found in it.
version_line=$(llama-cli --version 2>&1 | grep -m1 '^version:' | tr -d '"\\' || true)
build=$(printf '%s\n' "$version_line" | sed -n \
    -e 's/.*[( ]build \([0-9][0-9]*\).*/\1/p' \
    -e 't' -e 's/^version: \([0-9][0-9]*\) .*/\1/p' | clean)
commit=$(printf '%s\n' "$version_line" | sed -n \
    -e 's/.*commit \([0-9A-Za-z]*\).*/\1/p' \
    -e 't' -e 's/^version: [0-9]* (\([0-9a-f]*\)).*/\1/p' | clean)

printf '{\n'
printf '  "backend": "%s",\n' "$(printf '%s' "$backend" | clean)"
printf '  "llama_cpp_version": "%s",\n' "$version_line"
printf '  "llama_cpp_build": "%s",\n' "${build:-unknown}"
printf '  "llama_cpp_commit": "%s",\n' "${commit:-unknown}"
printf '  "llama_cpp_package": "%s",\n' "$(version_of llama.cpp-tools)"
ggml=$(version_of 'libggml0')
for pair in "$@"; do
    case "$pair" in ggml_version==*) ggml=$(printf '%s' "${pair#*==}" | clean) ;; esac
done
printf '  "ggml_version": "%s",\n' "$ggml"
for pair in "$@"; do
    key=${pair%%=*}
    case "$pair" in
        ggml_version==*) ;;
        *==*) printf '  "%s": "%s",\n' "$(printf '%s' "$key" | clean)" \
            "$(printf '%s' "${pair#*==}" | clean)" ;;
        *) printf '  "%s": "%s",\n' "$(printf '%s' "$key" | clean)" "$(version_of "${pair#*=}")" ;;
    esac
done
printf '  "debian": "%s"\n' "$(clean < /etc/debian_version)"
printf '}\n'
