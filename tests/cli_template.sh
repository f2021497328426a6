#!/usr/bin/env bash
# cli_template.sh -- `smolbot template -m MODEL` renders a conversation the
# way the server builds that file's prompt: every case of
# refdata/families/family_template_cases.jsonl from the llama-tiny and
# qwen3-tiny files' own templates, byte for byte, and SmolLM3 cases through
# smollm3-tiny (the native SmolLM3 format, the official template's text).
# A model that does not exist is a clear error. JSON is read with node.
# Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
BIN=${SMOLBOT:-build/san/smolbot}
SHARED=${SMOLBOT_SHARED:-../shared}
P=0 F=0 S=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
finish() { echo "$P passed, $F failed, $S skipped"; [ $F = 0 ]; exit $?; }

if [ ! -x "$BIN" ]; then echo "FAIL $BIN not built"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
if [ ! -r "$SHARED/refdata/families/family_template_cases.jsonl" ] || ! command -v node >/dev/null; then
  echo "  SKIP shared refdata or node absent"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
TMP=$(mktemp -d /tmp/smolbot-cli-template-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

# one case per pair of files: NAME.json (the input) and NAME.want (the text)
node -e '
const fs = require("fs"), [src, dir, model] = process.argv.slice(1);
for (const l of fs.readFileSync(src, "utf8").split("\n")) {
  if (!l) continue;
  const o = JSON.parse(l);
  const m = o.family ? (o.family === "llama" ? "llama-tiny" : "qwen3-tiny") : model;
  const name = m + "." + o.name;
  fs.writeFileSync(dir + "/" + name + ".json", l);
  fs.writeFileSync(dir + "/" + name + ".want", o.expected);
  console.log(name, m);
}' "$SHARED/refdata/families/family_template_cases.jsonl" "$TMP" > "$TMP/cases"
node -e '
const fs = require("fs"), [src, dir] = process.argv.slice(1);
for (const l of fs.readFileSync(src, "utf8").split("\n")) {
  if (!l) continue;
  const o = JSON.parse(l);
  if (o.xml_tools || o.tools) continue; /* xml_tools is a key the server never sends */
  const name = "smollm3-tiny-f32." + o.name;
  fs.writeFileSync(dir + "/" + name + ".json", l);
  fs.writeFileSync(dir + "/" + name + ".want", o.expected);
  console.log(name, "smollm3-tiny-f32");
}' "$SHARED/refdata/template/chat_template_cases.jsonl" "$TMP" >> "$TMP/cases"

n=0
while read -r name model; do
  n=$((n+1))
  if "$BIN" template -m "$SHARED/models/$model.gguf" < "$TMP/$name.json" > "$TMP/$name.got" 2> "$TMP/$name.err" &&
     cmp -s "$TMP/$name.got" "$TMP/$name.want"; then
    ok "template -m $name"
  else
    ko "template -m $name: $(head -c 300 "$TMP/$name.err")"
    diff <(cat "$TMP/$name.want"; echo) <(cat "$TMP/$name.got"; echo) | head -10
  fi
done < "$TMP/cases"
[ $n -ge 6 ] && ok "$n cases" || ko "only $n cases"

if "$BIN" template -m "$TMP/nope.gguf" < "$TMP/llama-tiny.user.json" > /dev/null 2> "$TMP/err"; then
  ko "a missing model is an error"
elif grep -q "nope.gguf.*cannot open" "$TMP/err"; then ok "a missing model is an error"; else ko "missing model: $(cat "$TMP/err")"; fi
finish
