#!/usr/bin/env bash
# Build cost of each candidate store alone (issue #24): a clean `cargo build --release` of this
# crate with only that backend's feature, in a fresh target directory; the crates it pulls in;
# those not already in the library's own Cargo.lock; and whether it needs a C compiler (the
# pure-Rust ones are built with CC and CXX pointing at /bin/false, which fails any C build).
#
# Usage: tools/spool-bench/build-cost.sh [OUT_DIR]   (default /tmp/spool-build-cost; removed after)
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-/tmp/spool-build-cost}
rm -rf "$out"
mkdir -p "$out"
root_lock=../../Cargo.lock

echo "| backend | clean release build (s) | crates (spec's count) | distinct crates, normal | + build deps | not in the library's lock | C compiler | load before -> after |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for f in none redb fjall sqlite; do
  feat=(--no-default-features)
  [ "$f" != none ] && feat+=(--features "$f")
  spec=$(cargo tree --locked -e normal --prefix none "${feat[@]}" | sort -u | wc -l)
  # Distinct name+version, the root (spool-bench itself) left out.
  cargo tree --locked -e normal --prefix none --format '{p}' "${feat[@]}" | sed 's/ (\*)//; s/ (proc-macro)//' | { grep -v '^spool-bench ' || true; } | sort -u >"$out/$f.normal"
  cargo tree --locked -e normal,build --prefix none --format '{p}' "${feat[@]}" | sed 's/ (\*)//; s/ (proc-macro)//' | { grep -v '^spool-bench ' || true; } | sort -u >"$out/$f.all"
  # Which of those the library's lock already has (same name and version).
  python3 - "$root_lock" "$out/$f.all" >"$out/$f.new" <<'EOF'
import sys, re
lock = open(sys.argv[1]).read()
have = set(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', lock))
for line in open(sys.argv[2]):
    name, ver = line.split()[:2]
    if (name, ver.lstrip("v")) not in have:
        print(name, ver)
EOF
  if grep -q '^cc ' "$out/$f.all"; then
    cc=yes
    env_cc=()
  else
    cc=no
    env_cc=(CC=/bin/false CXX=/bin/false)
  fi
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s.%N)
  env "${env_cc[@]}" CARGO_TARGET_DIR="$out/target-$f" cargo build --release --locked --quiet "${feat[@]}"
  end=$(date +%s.%N)
  load1=$(cut -d' ' -f1-3 /proc/loadavg)
  secs=$(python3 -c "print(f'{$end - $start:.1f}')")
  if [ "$cc" = no ]; then cc="no (built with CC=/bin/false)"; fi
  echo "| $f | $secs | $spec | $(wc -l <"$out/$f.normal") | $(wc -l <"$out/$f.all") | $(wc -l <"$out/$f.new") | $cc | $load0 -> $load1 |"
  rm -rf "$out/target-$f"
done
for f in redb fjall sqlite; do
  echo
  echo "$f, not in the library's lock: $(tr '\n' ' ' <"$out/$f.new")"
done
# The C build, shown failing without a compiler.
echo
echo "sqlite with CC=/bin/false:"
if CC=/bin/false CXX=/bin/false CARGO_TARGET_DIR="$out/target-nocc" cargo build --release --locked --quiet --no-default-features --features sqlite >"$out/nocc.log" 2>&1; then
  echo "  built (unexpected)"
else
  grep -m3 -iE 'error|failed' "$out/nocc.log" | sed 's/^/  /'
fi
rm -rf "$out"
