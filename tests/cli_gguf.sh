#!/usr/bin/env bash
# cli_gguf.sh -- `smolbot inspect` and `smolbot gen-model` end to end.
#
# Uses build/san/smolbot (SMOLBOT overrides) and the shared models. The key
# check: gen-model --preset tiny --quant q4_k_m reproduces exactly the tensor
# table (names, order, types, shapes, offsets, sizes) and metadata key order
# of the real smollm3-tiny-q4_k_m.gguf. JSON is compared with node when
# present (CI has it), else those checks are skipped. The 3B file (1.9 GB)
# is only generated when SMOLBOT_CLI_3B=1. Last line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
BIN=${SMOLBOT:-build/san/smolbot}
SHARED=${SMOLBOT_SHARED:-../shared}
M=$SHARED/models
P=0 F=0 S=0
ok() { P=$((P+1)); echo "ok   $1"; }
ko() { F=$((F+1)); echo "FAIL $1"; }
skip() { S=$((S+1)); echo "  SKIP $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }

if [ ! -x "$BIN" ]; then echo "FAIL $BIN not built"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
if [ ! -r "$M/smollm3-tiny-q4_k_m.gguf" ]; then skip "shared models not found in $M"; echo "0 passed, 0 failed, 1 skipped"; exit 0; fi
TMP=$(mktemp -d /tmp/smolbot-cli-gguf-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
TINY=$M/smollm3-tiny-q4_k_m.gguf
HAVE_NODE=0; command -v node >/dev/null 2>&1 && HAVE_NODE=1

# ---- inspect ----
"$BIN" inspect "$TINY" > "$TMP/t.txt" 2> "$TMP/t.err"
check "inspect exits 0" [ $? = 0 ]
check "inspect shows the tensor table" grep -qE '^  token_embd.weight +Q6_K +\[256, 128256\]' "$TMP/t.txt"
check "inspect shows totals" grep -qE '^  Q4_K +24 tensors' "$TMP/t.txt"
check "inspect shows NoPE layers" grep -qE '^  nope layers +3$' "$TMP/t.txt"
check "inspect finds special tokens" grep -q 'eot=128009 pad=128004 im_start=128011 im_end=128012 think=128002 /think=128003' "$TMP/t.txt"
check "inspect truncates the chat template" grep -qE 'tokenizer.chat_template .*\.\.\. \(3795 bytes\)' "$TMP/t.txt"
check "inspect shows arrays by type and length" grep -qE 'tokenizer.ggml.tokens +array +\[str x 128256\]' "$TMP/t.txt"
"$BIN" inspect --json "$TINY" > "$TMP/t.json"
check "inspect --json exits 0" [ $? = 0 ]
"$BIN" inspect /nonexistent.gguf 2> "$TMP/e1" >/dev/null
check "inspect of a missing file exits 1" [ $? = 1 ]
check "missing file message names the file and why" grep -q 'cannot open /nonexistent.gguf: No such file' "$TMP/e1"
head -c 100000 "$TINY" > "$TMP/cut.gguf"
"$BIN" inspect "$TMP/cut.gguf" 2> "$TMP/e2" >/dev/null
check "inspect of a truncated file exits 1" [ $? = 1 ]
check "truncation message names file and offset" grep -qE 'cut.gguf: offset [0-9]+: ' "$TMP/e2"
"$BIN" inspect 2>/dev/null; check "inspect without a file is a usage error" [ $? = 2 ]

# ---- gen-model ----
"$BIN" gen-model --preset tiny --quant q4_k_m --seed 3 --vocab-from "$TINY" -o "$TMP/g.gguf" 2> "$TMP/g.err"
check "gen-model tiny q4_k_m exits 0" [ $? = 0 ]
check "gen-model leaves no temp file" [ -z "$(ls "$TMP" | grep '\.tmp\.')" ]
"$BIN" gen-model --preset tiny --quant q4_k_m --seed 3 --vocab-from "$TINY" -o "$TMP/g2.gguf" 2>/dev/null
check "gen-model is deterministic" cmp -s "$TMP/g.gguf" "$TMP/g2.gguf"
"$BIN" gen-model --preset tiny --quant q4_k_m --seed 4 --vocab-from "$TINY" -o "$TMP/g3.gguf" 2>/dev/null
differ() { ! cmp -s "$1" "$2"; }
check "another seed gives other weights" differ "$TMP/g.gguf" "$TMP/g3.gguf"
check "same size as the real tiny file" [ "$(stat -c %s "$TMP/g.gguf")" = "$(stat -c %s "$TINY")" ]
for q in f32 f16 q8_0; do
  "$BIN" gen-model --preset tiny --quant $q --vocab-from "$TINY" -o "$TMP/$q.gguf" 2>/dev/null &&
    "$BIN" inspect --json "$TMP/$q.gguf" > "$TMP/$q.json"
  check "gen-model tiny $q writes a readable file" [ $? = 0 ]
done
"$BIN" gen-model --preset huge --vocab-from "$TINY" -o "$TMP/x.gguf" 2>/dev/null; check "bad preset is a usage error" [ $? = 2 ]
"$BIN" gen-model --preset tiny -o "$TMP/x.gguf" 2>/dev/null; check "missing --vocab-from is a usage error" [ $? = 2 ]
"$BIN" gen-model --preset tiny --quant q3 --vocab-from "$TINY" -o "$TMP/x.gguf" 2>/dev/null; check "bad quant is a usage error" [ $? = 2 ]
"$BIN" gen-model --preset tiny --vocab-from "$M/quant-types.gguf" -o "$TMP/x.gguf" 2>/dev/null; check "donor without tokenizer fails" [ $? = 1 ]
check "failed gen-model writes nothing" [ ! -e "$TMP/x.gguf" ]
# the other families: each tiny preset, with its own tokenizer, loads and runs
for a in llama:llama-tiny qwen2:qwen3-tiny qwen3:qwen3-tiny; do
  arch=${a%%:*} donor=$M/${a#*:}.gguf
  if [ ! -r "$donor" ]; then skip "$donor absent"; continue; fi
  "$BIN" gen-model --arch $arch --preset tiny --quant q4_k_m --vocab-from "$donor" -o "$TMP/$arch.gguf" 2>/dev/null &&
    "$BIN" generate -m "$TMP/$arch.gguf" --prompt-ids 1,2,3 --greedy -n 2 --ignore-eos --ids > "$TMP/$arch.out" 2>/dev/null
  check "gen-model --arch $arch tiny q4_k_m runs in generate" grep -qE '^\[[0-9]+, ?[0-9]+\]$' "$TMP/$arch.out"
  "$BIN" inspect "$TMP/$arch.gguf" > "$TMP/$arch.txt" 2>/dev/null
  check "gen-model --arch $arch: general.architecture" grep -qE "general.architecture +str +\"$arch\"" "$TMP/$arch.txt"
done
check "llama tiny has rope_freqs.weight" grep -qE '^  rope_freqs.weight +F32 +\[32\]' "$TMP/llama.txt"
check "qwen2 tiny has q/k/v biases" grep -qE '^  blk.0.attn_k.bias +F32 +\[64\]' "$TMP/qwen2.txt"
check "qwen3 tiny has q/k norms" grep -qE '^  blk.3.attn_q_norm.weight +F32 +\[128\]' "$TMP/qwen3.txt"
"$BIN" gen-model --arch qwen2 --preset 3b --vocab-from "$TINY" -o "$TMP/x.gguf" 2>/dev/null; check "preset of another arch is a usage error" [ $? = 2 ]

if [ $HAVE_NODE = 1 ]; then
  "$BIN" inspect --json "$TMP/g.gguf" > "$TMP/g.json"
  "$BIN" inspect --json "$M/smollm3-tiny-f32.gguf" > "$TMP/ref32.json"
  node - "$TMP" > "$TMP/node.out" 2>&1 <<'JS'
const fs = require('fs'), dir = process.argv[2];
const J = f => JSON.parse(fs.readFileSync(dir + '/' + f + '.json', 'utf8'));
let pass = 0, fail = 0;
const check = (name, cond) => { if (cond) { pass++; console.log('ok   ' + name); } else { fail++; console.log('FAIL ' + name); } };
const t = J('t'), g = J('g'), r32 = J('ref32'), f32 = J('f32'), f16 = J('f16'), q8 = J('q8_0');
const table = j => j.tensors.map(x => [x.name, x.type, x.shape.join('x'), x.offset, x.bytes].join(' ')).join('\n');
const keys = j => j.metadata.map(m => m.key).join(',');
const val = (j, k) => JSON.stringify(j.metadata.find(m => m.key === k));
check('json: tiny model summary', t.model.layers === 4 && t.model.embedding === 256 && t.model.kv_heads === 1 &&
      t.model.head_dim === 64 && t.model.nope_layers.join() === '3' && t.model.vocab === 128256 && t.model.chat_template);
check('json: special tokens', t.model.special_tokens.im_start === 128011 && t.model.special_tokens.im_end === 128012 &&
      t.model.special_tokens.think === 128002 && t.model.special_tokens.bos === 128000);
check('json: totals', t.types.Q4_K.count === 24 && t.types.Q6_K.count === 5 && t.types.F32.count === 9);
check('gen-model q4_k_m: tensor table equals the real tiny file', table(g) === table(t));
check('gen-model q4_k_m: metadata keys and order equal', keys(g) === keys(t));
check('gen-model: tokenizer kvs copied verbatim', ['tokenizer.ggml.tokens', 'tokenizer.ggml.merges', 'tokenizer.ggml.token_type',
      'tokenizer.chat_template', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.add_bos_token'].every(k => val(g, k) === val(t, k)));
check('gen-model: shape keys equal', ['smollm3.block_count', 'smollm3.embedding_length', 'smollm3.feed_forward_length',
      'smollm3.attention.head_count', 'smollm3.attention.head_count_kv', 'smollm3.rope.freq_base', 'smollm3.context_length',
      'smollm3.attention.layer_norm_rms_epsilon', 'smollm3.rope.dimension_count', 'smollm3.vocab_size', 'general.file_type']
      .every(k => val(g, k) === val(t, k)));
check('gen-model f32: tensor table equals the real f32 file', table(f32) === table(r32));
check('gen-model f32: metadata keys and order equal', keys(f32) === keys(r32));
check('gen-model f16: matrices F16, norms F32', f16.tensors.every(x => x.type === (x.shape.length === 1 ? 'F32' : 'F16')));
check('gen-model q8_0: matrices Q8_0, norms F32', q8.tensors.every(x => x.type === (x.shape.length === 1 ? 'F32' : 'Q8_0')));
check('gen-model file_type per quant', val(f16, 'general.file_type').includes('"value":1') && val(q8, 'general.file_type').includes('"value":7'));
console.log(`node: ${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
JS
  rc=$?
  grep -v '^node:' "$TMP/node.out"
  np=$(sed -nE 's/^node: ([0-9]+) passed, ([0-9]+) failed$/\1/p' "$TMP/node.out")
  nf=$(sed -nE 's/^node: ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$TMP/node.out")
  P=$((P+${np:-0})) F=$((F+${nf:-1}))
  if [ $rc != 0 ] && [ "${nf:-1}" = 0 ]; then F=$((F+1)); fi
else
  skip "node not found: JSON comparisons skipped"
fi

if [ "${SMOLBOT_CLI_3B:-0}" = 1 ]; then
  OUT3=${TMPDIR:-/tmp}/smolbot-cli-3b-$$.gguf
  "$BIN" gen-model --preset 3b --quant q4_k_m --vocab-from "$TINY" -o "$OUT3" 2> "$TMP/3b.err"
  check "gen-model 3b q4_k_m" [ $? = 0 ]
  sed 's/^/  /' "$TMP/3b.err"
  "$BIN" inspect "$OUT3" > "$TMP/3b.txt"
  check "3b: 326 tensors" grep -qE '^  all +326 tensors' "$TMP/3b.txt"
  check "3b: Q4_K 216, Q6_K 37, F32 73" bash -c "grep -qE '^  Q4_K +216 ' $TMP/3b.txt && grep -qE '^  Q6_K +37 ' $TMP/3b.txt && grep -qE '^  F32 +73 ' $TMP/3b.txt"
  check "3b: NoPE layers" grep -qE 'nope layers +3,7,11,15,19,23,27,31,35$' "$TMP/3b.txt"
  rm -f "$OUT3"
else
  skip "3b generation (1.9 GB): set SMOLBOT_CLI_3B=1"
fi

echo "$P passed, $F failed, $S skipped"
[ $F = 0 ]
