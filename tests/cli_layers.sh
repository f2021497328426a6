#!/usr/bin/env bash
# cli_layers.sh -- the include graph of src/ against src/layers.txt, and the
# checker itself on small trees that break each rule once (so a checker that
# passes everything fails here). Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
P=0 F=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
TMP=$(mktemp -d /tmp/smolbot-layers-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if out=$(bash tools/layers.sh src src/layers.txt 2>&1); then
  ok "src/ keeps to src/layers.txt"
else
  ko "src/ keeps to src/layers.txt"; echo "$out" | sed 's/^/    /'
fi

# A tree with one file per case: name, expect (0 clean, 1 flagged), include line.
mk() { # dir module file text
  mkdir -p "$1/$2"; printf '%s\n' "$4" > "$1/$2/$3"
}
cat > "$TMP/rules" <<'EOF'
core:
store: core   # a comment
api: core store
EOF
case_tree() { # name expect module text
  local d="$TMP/$1"
  mkdir -p "$d/core" "$d/store/sub" "$d/api"
  : > "$d/core/core.h"; : > "$d/store/store.h"; : > "$d/store/store_int.h"; : > "$d/store/sub/x.h"
  mk "$d" "$3" "case.c" "$4"
  bash tools/layers.sh "$d" "$TMP/rules" > "$d.out" 2>&1
  local rc=$?
  if [ "$rc" = "$2" ]; then ok "checker: $1"; else ko "checker: $1 (exit $rc, wanted $2)"; sed 's/^/    /' "$d.out"; fi
}
case_tree "allowed edge passes"        0 api   '#include "store/store.h"'
case_tree "own module passes"          0 store '#include "store/store_int.h"'
case_tree "system include ignored"     0 core  '#include <stdio.h>'
case_tree "upward edge fails"          1 store '#include "api/api.h"'
case_tree "unlisted edge fails"        1 core  '#include "store/store.h"'
case_tree "private _int.h fails"       1 api   '#include "store/store_int.h"'
case_tree "subfolder header fails"     1 api   '#include "store/sub/x.h"'
case_tree "relative include fails"     1 store '#include "../core/core.h"'
case_tree "unlisted module fails"      1 extra '#include "core/core.h"'
case_tree "indented include read"      1 store '  #  include "api/api.h"'

bash tools/layers.sh "$TMP/none" "$TMP/missing" > /dev/null 2>&1
if [ $? = 2 ]; then ok "missing rules file is an error"; else ko "missing rules file is an error"; fi

echo "$P passed, $F failed, 0 skipped"
[ "$F" = 0 ]
