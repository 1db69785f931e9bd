#!/usr/bin/env bash
# Builds and runs Canopy's libFuzzer targets (Fuzz/<target>/main.swift) against their seed corpora
# (Fuzz/corpus/<target>/). Needs `swift build` to have run once (the signature target links swift-crypto's
# objects from it); everything else is compiled here from the sources, instrumented, under .build/fuzz.
#
#   scripts/fuzz.sh [--runs N | --time SECONDS] [target...]     targets: signature xml native-json quantity scnet-create
#
# --runs N: N executions per target (default 20000, a few seconds each); --time S: S seconds per target instead.
# Exits non-zero on the first target that crashes; the crashing input is left under .build/fuzz/crashes/.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20000
seconds=""
targets=()
while (($#)); do
    case "$1" in
    --runs) runs=$2; shift 2 ;;
    --time) seconds=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=(signature xml native-json quantity scnet-create)

out=.build/fuzz
mkdir -p "$out/mods" "$out/deps" "$out/crashes"

# Instrumented for libFuzzer's coverage, and with AddressSanitizer when this toolchain links it.
sanitize=-sanitize=fuzzer,address
if ! echo '@_cdecl("LLVMFuzzerTestOneInput") public func f(_ d: UnsafePointer<UInt8>, _ n: Int) -> CInt { 0 }' > "$out/probe.swift" ||
    ! swiftc -parse-as-library $sanitize "$out/probe.swift" -o "$out/probe" 2>/dev/null; then
    sanitize=-sanitize=fuzzer
fi
flags=(-O -g -swift-version 6 -enable-upcoming-feature ExistentialAny "$sanitize")

# A module of sources compiled to one object and its interface, rebuilt when a source is newer.
module() {
    local name=$1
    shift
    local object="$out/$name.o"
    local stale=1
    if [ -f "$object" ]; then
        stale=0
        for f in "$@"; do [ "$f" -nt "$object" ] && stale=1; done
    fi
    ((stale)) || return 0
    echo "fuzz: compiling module $name"
    swiftc "${flags[@]}" -parse-as-library -wmo -module-name "$name" -emit-module -emit-module-path "$out/mods/$name.swiftmodule" -c "$@" -o "$object"
}

core_sources() { find Sources/CanopyCore -name '*.swift' | sort; }

# swift-crypto as `swift build` left it: its module interface alone in deps/ (not every SwiftPM module, which
# would shadow the instrumented CanopyCore), and its objects.
crypto_objects=()
crypto() {
    local bin
    bin=$(swift build --show-bin-path)
    if [ ! -d "$bin/Crypto.build" ]; then
        echo "fuzz: building swift-crypto (swift build --target Crypto)"
        swift build --target Crypto >/dev/null
    fi
    for m in Crypto CryptoBoringWrapper; do cp -f "$bin/Modules/$m.swiftmodule" "$out/deps/"; done
    mapfile -t crypto_objects < <(find "$bin/Crypto.build" "$bin/CryptoBoringWrapper.build" "$bin/CCryptoBoringSSL.build" "$bin/CCryptoBoringSSLShims.build" \
        -name '*.o' | sort)
}

build() {
    local target=$1
    local binary="$out/$target"
    local sources=("Fuzz/$target/main.swift")
    local objects=()
    local extra=()
    case "$target" in
    quantity)
        module CanopyCore $(core_sources)
        objects=("$out/CanopyCore.o")
        ;;
    native-json)
        module CanopyCore $(core_sources)
        sources+=(Sources/CanopyHTTP/Native/CreateWorkloadRequest.swift Sources/CanopyHTTP/Native/BodyShape.swift)
        objects=("$out/CanopyCore.o")
        ;;
    xml)
        module CanopyXML Sources/CanopyXML/*.swift
        sources+=(Sources/CanopyDataForest/XMLBodies.swift Sources/CanopyHTTP/Dialect/JSONValue.swift)
        objects=("$out/CanopyXML.o")
        ;;
    scnet-create)
        module CanopyCore $(core_sources)
        sources+=(Sources/CanopySCNet/InstanceRequest.swift Sources/CanopySCNet/SCNetError.swift Sources/CanopySCNet/SCNetMapping.swift
            Sources/CanopyHTTP/Dialect/JSONValue.swift)
        objects=("$out/CanopyCore.o")
        ;;
    signature)
        module CanopyCore $(core_sources)
        crypto
        sources+=(Sources/CanopyDataForest/SignatureV2.swift)
        objects=("$out/CanopyCore.o" "${crypto_objects[@]}")
        extra=(-I "$out/deps" -lstdc++)
        ;;
    *)
        echo "unknown target $target (signature xml native-json quantity scnet-create)" >&2
        exit 2
        ;;
    esac
    local stale=1
    if [ -f "$binary" ]; then
        stale=0
        for f in "${sources[@]}" "${objects[@]}"; do [ "$f" -nt "$binary" ] && stale=1; done
    fi
    if ((stale)); then
        echo "fuzz: linking $target"
        # gold warns once per AddressSanitizer helper symbol it cannot export; those lines say nothing.
        swiftc "${flags[@]}" -parse-as-library -module-name "Fuzz${target//-/}" -I "$out/mods" "${extra[@]}" "${sources[@]}" "${objects[@]}" -o "$binary" \
            2> >(grep -v "Cannot export local symbol '__asan" >&2)
    fi
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
for target in "${targets[@]}"; do
    build "$target"
    # New inputs go to a work corpus under .build; the committed seeds are only read.
    mkdir -p "$out/work/$target"
    limit=(-runs="$runs")
    [ -n "$seconds" ] && limit=(-max_total_time="$seconds")
    echo "fuzz: running $target (${limit[*]})"
    log="$out/$target.log"
    if ! "$out/$target" "${limit[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$target-" "$out/work/$target" "Fuzz/corpus/$target" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target FAILED; input under $out/crashes/, log in $log" >&2
        exit 1
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)
    execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)
    echo "fuzz: $target ok: ${done_line:-done}; executions: ${execs:-?}"
done
