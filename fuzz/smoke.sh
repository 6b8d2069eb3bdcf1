#!/usr/bin/env bash
# A short run of every fuzz target (FUZZ_SMOKE_SECS, 20 s each by default), for CI
# when the toolchain allows it. It skips, with a message and exit 0, when cargo-fuzz
# is missing or rustc refuses nightly flags; it falls back to no sanitizer when
# AddressSanitizer cannot build. A target that crashes, or a target that does not
# compile at all, fails the run.
set -uo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SMOKE_SECS:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi
# cargo-fuzz passes -Z flags: nightly, or stable with RUSTC_BOOTSTRAP=1.
if ! rustc -Z help >/dev/null 2>&1; then
    export RUSTC_BOOTSTRAP=1
    if ! rustc -Z help >/dev/null 2>&1; then
        echo "fuzz smoke: skipped: this rustc refuses nightly flags even with RUSTC_BOOTSTRAP=1"
        exit 0
    fi
fi

./seed.sh >/dev/null
sanitizer=address
if ! cargo fuzz build -s address >build.log 2>&1; then
    if cargo fuzz build -s none >>build.log 2>&1; then
        echo "fuzz smoke: AddressSanitizer does not build here; running without a sanitizer"
        sanitizer=none
    else
        tail -30 build.log
        echo "fuzz smoke: FAILED: the fuzz targets do not compile (fuzz/build.log)"
        exit 1
    fi
fi

failed=()
for target in $(cargo fuzz list); do
    echo "fuzz smoke: $target for ${secs}s"
    if ! cargo fuzz run -s "$sanitizer" "$target" -- \
        -max_total_time="$secs" -dict=json.dict -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"smoke-$target.log" 2>&1; then
        tail -40 "smoke-$target.log"
        failed+=("$target")
    else
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)" "smoke-$target.log" | tr '\n' ' '
        echo
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke: FAILED: ${failed[*]} (crash inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz smoke: all targets ran ${secs}s without a crash"
