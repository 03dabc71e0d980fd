#!/usr/bin/env bash
# Fuzzes the parsers a client or an operator's file reaches (the client message decoder, the JSON
# parser, ExactDecimal, the listener's message assembly with IngressSession, the CSV reader, the price
# file) with libFuzzer and AddressSanitizer: Tests/Fuzz/FuzzTargets.swift compiled with
# VoiceMeterDomain's sources and the transport's pure MessageAssembler.
#
#   deploy/fuzz.sh              every target for 10 s (what CI runs)
#   deploy/fuzz.sh 600 json     the json target for 10 minutes
#
# Each target starts from its committed corpus (Tests/Fuzz/corpus/<target>) and writes what it
# finds to a scratch corpus; a crash leaves its input in .build/fuzz/crash-… and fails the run.
# Prints, per target, the seconds, the executions and the corpus size it reached.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
all_targets=(client-message json decimal ingress-session csv price-file)
shift || true
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $target "* ]] || { echo "fuzz: no target '$target'; the targets are: ${all_targets[*]}" >&2; exit 2; }
done

out=.build/fuzz
mkdir -p "$out"
binary=$out/voicemeter-fuzz
sources=(Sources/VoiceMeterDomain/*.swift Sources/VoiceMeterDomain/*/*.swift
         Sources/WebSocketTransport/MessageAssembler.swift Sources/WebSocketTransport/WebSocketLimits.swift Tests/Fuzz/FuzzTargets.swift)
if [ ! -x "$binary" ] || [ -n "$(find "${sources[@]}" -newer "$binary" | head -n 1)" ]; then
    echo "fuzz: compiling ${#sources[@]} files with -sanitize=fuzzer,address"
    # ld.gold warns about every ASan helper symbol: the log is shown only if linking fails.
    swiftc -sanitize=fuzzer,address -O -parse-as-library -D VOICEMETER_FUZZ -module-name VoiceMeterDomain "${sources[@]}" -o "$binary" 2>"$out/compile.log" \
        || { cat "$out/compile.log" >&2; exit 1; }
fi

failed=0
for target in "${targets[@]}"; do
    scratch=$(mktemp -d "$out/corpus-$target.XXXXXX")
    log=$out/$target.log
    if VOICEMETER_FUZZ_TARGET=$target "$binary" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/crash-$target-" \
        "$scratch" "Tests/Fuzz/corpus/$target" >"$log" 2>&1; then
        status=clean
    else
        status="FAILED (see $log and $out/crash-$target-*)"
        failed=1
    fi
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    printf '%-16s %4s s  %10s executions  corpus %4s inputs  %s\n' "$target" "$seconds" "${runs:-?}" \
        "$(($(ls "$scratch" | wc -l) + $(ls "Tests/Fuzz/corpus/$target" | wc -l)))" "$status"
    rm -rf "$scratch"
done
exit "$failed"
