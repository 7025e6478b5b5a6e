#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time, then prints per target how long it ran, how many inputs
# it tried and whether it crashed. Exits 1 if any target crashed (or failed to run), naming the artifact to
# reproduce it with (`RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET ARTIFACT` in this directory).
#
#   FUZZ_SECONDS=60                 seconds per target (libFuzzer's -max_total_time)
#   FUZZ_TARGETS="label resource"   run only these targets (default: every target, see `cargo fuzz list`)
#   FUZZ_SANITIZER=address          or "none": a faster build and run without AddressSanitizer
#   FUZZ_ARGS="-seed=1"             more libFuzzer options for every target
#   FUZZ_KEEP_GOING=1               go on fuzzing a target after a crash (libFuzzer's fork mode), so that one run
#                                   finds every bug the time allows; 0 stops a target at its first crash
#
# New inputs that reach new code are kept in fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET holds the
# committed starting inputs; crashes go to fuzz/artifacts/TARGET.
set -uo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
# cargo fuzz passes rustc unstable flags (-Zsanitizer, and the coverage instrumentation's); the one stable
# toolchain accepts them when told it is bootstrapping. No nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
# The fuzz crate keeps its own build directory (fuzz/target), whatever the main workspace's is.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked || exit 1
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer" || exit 1

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# The targets are run directly rather than through `cargo fuzz run`, whose error report repeats the whole log.
binaries="target/$(rustc -vV | sed -n 's/^host: //p')/release"
summary=()
failed=0
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  log="artifacts/$target/last-run.log"
  mode=()
  # Keep going: libFuzzer's fork mode fuzzes in a child process and starts another after a crash, so one run
  # finds every bug that the time allows, not only the first.
  [ "${FUZZ_KEEP_GOING:-1}" = 1 ] && mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  echo "== $target: fuzzing for ${seconds}s (log: fuzz/$log)"
  marker=$(mktemp)
  started=$(date +%s.%N)
  "$binaries/$target" "${mode[@]}" -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} "corpus/$target" "${seeds[@]}" >"$log" 2>&1
  status=$?
  elapsed=$(awk -v started="$started" -v ended="$(date +%s.%N)" 'BEGIN { printf "%.1f", ended - started }')
  # Executed inputs: the final statistics, or in fork mode the last status line (`#N: cov: …`).
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p; s/^#\([0-9]*\): .*/\1/p' "$log" | tail -n 1)
  executions="${executions:-?}"
  # The inputs this run left: each is replayed once to learn its panic, and one input per panic is shown.
  mapfile -t artifacts < <(find "artifacts/$target" -type f -name '*-*' ! -name last-run.log -newer "$marker" | sort)
  rm -f "$marker"
  if [ "$status" -eq 0 ] && [ "${#artifacts[@]}" -eq 0 ]; then
    result="ok"
  elif [ "${#artifacts[@]}" -eq 0 ]; then
    failed=1
    result="FAILED (exit $status): see fuzz/$log"
    tail -n 20 "$log"
  else
    failed=1
    declare -A shown=()
    for artifact in "${artifacts[@]}"; do
      panic=$("$binaries/$target" -timeout=10 "$artifact" 2>&1 | tr -d '\000' | grep -a -m1 -A1 "panicked at" |
        sed 's/^.*panicked at //' | tr '\n' ' ')
      # Panics are told apart by where they happened (file, line and column).
      where="${panic%% *}"
      where="${where%:}"
      where="${where:-$(basename "$artifact" | cut -d- -f1)}"
      [ -n "${shown[$where]:-}" ] && continue
      shown[$where]=1
      echo "-- $target: ${panic:-$(basename "$artifact") (no panic message; see fuzz/$log)}"
      echo "   input (fuzz/$artifact), as the target read it:"
      cargo fuzz fmt --sanitizer "$sanitizer" "$target" "$artifact" 2>&1 | sed '/^$/d; /^Output of/d; s/^/   /' | head -n 5
    done
    places=$(for where in "${!shown[@]}"; do echo "${where##*/}"; done | sort | tr '\n' ' ')
    result="CRASH: ${#shown[@]} distinct panic(s) (${places% }) in ${#artifacts[@]} input(s) under fuzz/artifacts/$target"
    unset shown
  fi
  printf -v line "%-22s %8.1f s %12s executions   %s" "$target" "$elapsed" "$executions" "$result"
  echo "$line"
  summary+=("$line")
done

echo
echo "== fuzzing summary (${seconds}s per target, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "== at least one target crashed or failed; reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-…"
  exit 1
fi
echo "== no target crashed"
