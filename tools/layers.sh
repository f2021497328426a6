#!/usr/bin/env bash
# layers.sh [SRC_DIR [RULES]] -- the include graph between modules, checked.
#
# A module is a folder under src/. RULES (src/layers.txt) lists, for each
# module, the modules it may include; a module may always include itself.
# Three things fail the check, each printed as one line:
#   - an include of another module that RULES does not allow (an edge up the
#     layer graph, or one nobody has thought about yet);
#   - an include of another module's private header: a name ending in _int.h
#     or _impl.h, or a header in a subfolder of that module;
#   - a relative include that climbs out of the module ("../core/core.h"):
#     the one style is "core/core.h", from src/.
# Only quoted includes are read: <...> is the system's. Exits 0 when clean,
# 1 with the offending lines otherwise, 2 when RULES cannot be read.
set -u
SRC=${1:-src}
RULES=${2:-$SRC/layers.txt}
[ -r "$RULES" ] || { echo "layers: cannot read $RULES" >&2; exit 2; }

declare -A allow known
while read -r line; do
  line=${line%%#*}
  [ -z "${line// }" ] && continue
  mod=${line%%:*}; mod=${mod// }
  known[$mod]=1
  for dep in ${line#*:}; do allow[$mod/$dep]=1; done
done < "$RULES"

bad=0
report() { echo "$1"; bad=1; }
while IFS= read -r -d '' f; do
  rel=${f#"$SRC"/}
  mod=${rel%%/*}
  [ "$mod" = "$rel" ] && continue # a file directly in src/ (layers.txt)
  [ -n "${known[$mod]:-}" ] || { report "$rel: module '$mod' is not listed in $RULES"; continue; }
  n=0
  while IFS= read -r text; do
    n=$((n + 1))
    [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
    inc=${BASH_REMATCH[1]}
    case $inc in
      ../*) report "$rel:$n: relative include \"$inc\" (write it from src/)"; continue ;;
      */*) ;;
      *) continue ;; # a header beside the file: its own module
    esac
    dep=${inc%%/*}
    [ "$dep" = "$mod" ] && continue
    [ -d "$SRC/$dep" ] || continue # not a module (a generated or system path)
    [ -n "${allow[$mod/$dep]:-}" ] || report "$rel:$n: $mod may not include $dep (\"$inc\")"
    hdr=${inc#*/}
    case $hdr in
      */*|*_int.h|*_impl.h) report "$rel:$n: \"$inc\" is private to $dep" ;;
    esac
  done < "$f"
done < <(find "$SRC" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.cpp' \) -print0 | sort -z)
exit $bad
