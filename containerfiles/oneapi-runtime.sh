#!/bin/sh
# Assembles the oneapi image's SYCL runtime from the wheels `pip download` fetched (see
# oneapi-wheels.txt), into one prefix the image copies whole:
#
#   PREFIX/lib/             Intel's runtime libraries, one file per library: a wheel unpacks
#                           each symlink (libsycl.so -> .so.8 -> .so.8.0.0) as a full copy,
#                           so identical files are made symlinks to one of them again
#   PREFIX/ggml/libggml-sycl.so
#                           ggml's SYCL backend from cyllama-sycl, repointed at Debian's
#                           libggml-base.so.0 (the image loads it through GGML_BACKEND_PATH,
#                           never from ggml's backends0/: there every run would load it, and
#                           with no Intel device even CPU-only runs abort)
#   PREFIX/cpu-device/      the shim that lets ggml take the OpenCL CPU device (see below)
#   PREFIX/OpenCL/intel-cpu.icd
#                           the OpenCL CPU runtime's ICD file with its real path (the
#                           wheel's carries a placeholder, /opt/anaconda1anaconda2anaconda3)
#   PREFIX/provenance       KEY=VALUE lines for provenance.sh: wheel versions, module build
#
# usage: oneapi-runtime.sh PINS WHEEL_DIR PREFIX
set -eu

pins=$1
wheels=$2
prefix=$3
work=$(mktemp -d)
mkdir -p "$prefix/lib" "$prefix/ggml" "$prefix/cpu-device" "$prefix/OpenCL" "$prefix/licenses"

# Every pinned wheel, by its file name and sha256, and no other: one line naming each that
# is missing or changed, then the build stops.
tr -d '\\' < "$pins" | awk '/^[a-z]/ { url = $3 } /--hash=sha256:/ {
        sub(/.*--hash=sha256:/, ""); n = split(url, part, "/"); print $1 "  " part[n] }' \
    > "$work/SHA256SUMS"
(cd "$wheels" && sha256sum --check --quiet "$work/SHA256SUMS" >&2) || {
    echo "oneapi-runtime.sh: the wheels above are missing or not the pinned files" >&2; exit 1; }
awk '{ print $2 }' "$work/SHA256SUMS" > "$work/names"
extra=$(ls "$wheels" | grep -vxF -f "$work/names" || true)
[ -z "$extra" ] || { echo "oneapi-runtime.sh: unpinned files in $wheels: $extra" >&2; exit 1; }

for wheel in "$wheels"/*.whl; do
    unzip -q -o "$wheel" -d "$work"
done

# Intel's runtime (the files of every wheel's .data/data/lib: libraries, and the OpenCL CPU
# runtime's builtins (*.rtl, cllibrary*.o, cl.cfg) and SYCL's device libraries (*.spv),
# which are looked up beside them), less what no path through ggml's SYCL backend loads
# (LD_DEBUG=files of a bench on the CPU device): the compiler's LTO plugin and ONNX runtime,
# SYCL's runtime compiler (libsycl-jit, 144 MB: for kernels compiled from source, which
# ggml never does; SPIR-V goes to the device's own compiler), the preview/offload SYCL
# variants, tracing collectors, sanitizer device libraries, and oneMKL's interfaces,
# threading layers and cluster libraries other than the ones the module links (ilp64, TBB
# threading, core). oneMKL's and the OpenCL runtime's per-ISA libraries all stay: each
# machine loads the one for its CPU.
for lib in "$work"/*.data/data/lib/*; do
    name=$(basename "$lib")
    [ -f "$lib" ] || continue
    case "$name" in
        icx-lto.so | libonnxruntime* | libsycl-jit* | libsycl-preview* | libpstloffload* \
        | *trace_collector* | *-gdb.py | libsycl-[amt]san* | libmkl_blacs* | libmkl_scalapack* \
        | libmkl_cdft* | libmkl_gf_* | libmkl_gnu_thread* | libmkl_intel_thread* \
        | libmkl_sequential* | libmkl_intel_lp64* | libmkl_rt* | libtcm_debug*) continue ;;
    esac
    cp "$lib" "$prefix/lib/$name"
done
# Their licences, and where each wheel came from.
for info in "$work"/*.dist-info; do
    name=$(basename "$info" .dist-info)
    mkdir -p "$prefix/licenses/$name"
    cp -r "$info"/LICENSE* "$info"/licenses "$prefix/licenses/$name/" 2>/dev/null || true
done
for doc in "$work"/*.data/data/share/doc/*; do
    [ -d "$doc" ] && cp -r "$doc" "$prefix/licenses/$(basename "$(dirname "$(dirname \
        "$(dirname "$(dirname "$doc")")")")" .data)/"
done
cp "$pins" "$prefix/licenses/"
# One file per library: of identical files, the longest name (the full version) is kept
# and the others become symlinks to it, as in the packages the wheels were made from.
(cd "$prefix/lib" && sha256sum -- * | awk '{ print $1, length($2), $2 }' | sort -k1,1 -k2,2nr \
    | awk '$1 == prev { print keep, $3; next } { prev = $1; keep = $3 }' \
    | while read -r keep dup; do rm -f "$dup" && ln -s "$keep" "$dup"; done)

# The module links libggml-base under the wheel's hashed name and an RPATH into the wheel;
# Debian's libggml-base.so.0 is the same ggml (0.27.0), found through ld.so.
module=$(ls "$work"/cyllama_sycl.libs/libggml-sycl-*.so)
base=$(patchelf --print-needed "$module" | grep '^libggml-base-')
cp "$module" "$prefix/ggml/libggml-sycl.so"
patchelf --replace-needed "$base" libggml-base.so.0 --remove-rpath "$prefix/ggml/libggml-sycl.so"

# llama.cpp's SYCL backend takes devices of a GPU platform only ("can not find preferred
# GPU platform" on a host without one). On hosts without an Intel GPU, the CPU cell preloads
# this: sycl::device::is_gpu() answers true, and ONEAPI_DEVICE_SELECTOR=opencl:cpu leaves
# only the OpenCL CPU device to answer it. Never loaded on a GPU host.
printf '%s\n' '/* sycl::_V1::device::is_gpu() const */' \
    'int _ZNK4sycl3_V16device6is_gpuEv(const void *self) { (void)self; return 1; }' \
    > "$work/is_gpu.c"
tcc -shared -nostdlib -o "$prefix/cpu-device/libsycl-cpu-device.so" "$work/is_gpu.c"

echo /opt/oneapi/lib/libintelocl.so > "$prefix/OpenCL/intel-cpu.icd"

# Provenance: each wheel's version, and the llama.cpp build and DPC++ the module was built
# with (its build_config.json, its .comment section).
version() { sed -n 's/^Version: //p' "$work"/"$1"-*.dist-info/METADATA | head -n 1; }
config="$work/cyllama/build_config.json"
field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$config" | head -n 1; }
{
    echo "sycl_module==cyllama-sycl"
    echo "sycl_module_version==$(version cyllama_sycl)"
    echo "sycl_module_llama_cpp_build==$(field llama_cpp_version | tr -d b)"
    echo "sycl_module_ggml==$(field llama_cpp_ggml_version)"
    echo "sycl_module_compiler==$(readelf -p .comment "$module" | sed -n 's/.*DPC++\/C++ Compiler \([0-9.]*\).*/\1/p' | head -n 1)"
    echo "dpcpp==$(version intel_sycl_rt)"
    echo "cmplr_lib_ur==$(version intel_cmplr_lib_ur)"
    echo "umf==$(version umf)"
    echo "tbb==$(version tbb)"
    echo "onednn==$(version onednn)"
    echo "mkl==$(version mkl)"
    echo "mkl_sycl_blas==$(version onemkl_sycl_blas)"
    echo "opencl_cpu==$(version intel_opencl_rt)"
} > "$prefix/provenance"
rm -rf "$work"
