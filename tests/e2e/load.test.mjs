// load.test.mjs -- the short load run of `make test`: 20 concurrent
// streaming chats against the sanitized server (tests/load/load.mjs has
// the long runs of `make reliability`). Each completes or gets 429, none
// hangs, fds stay bounded between two rounds, no leak or sanitizer report.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { MODEL, SAN_BIN, startServer, stopAll } from './serve_util.mjs';
import { runLoad } from '../load/load.mjs';

const SKIP = !existsSync(MODEL) ? `model absent: ${MODEL}` : !SAN_BIN ? 'no smolbot binary: run make' : false;
if (SKIP) console.log(`# SKIP load test: ${SKIP}`);

after(async () => {
  for (const e of await stopAll()) {
    assert.doesNotMatch(e.err, /Sanitizer|runtime error/, e.err);
    assert.deepEqual(e.end, { code: 0, signal: null }, e.err);
  }
});

test('20 concurrent streams: done or 429, none hangs, RSS and fds bounded', { skip: SKIP, timeout: 240000 }, async () => {
  const srv = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--ctx', '512', '--kv-budget', '64', '-t', '2', '--max-streams', '12']);
  const r = await runLoad(srv, 20, { max_tokens: 4, warm: 1 });
  console.log(`# ${JSON.stringify(r)}`);
  assert.equal(r.hung, 0);
  assert.equal(r.failures, 0, JSON.stringify(r.bad));
  assert.equal(r.ok + r.refused, 20);
  assert.ok(r.refused > 0, 'over --max-streams: some refused with 429');
  // ASan's quarantine keeps freed memory resident, so RSS is only loosely
  // bounded here; leaks are LeakSanitizer's job at exit (checked in after()).
  // The tight RSS bound is checked on the release binary by make reliability.
  assert.ok(r.after.rssKiB < r.before.rssKiB + 96 * 1024, JSON.stringify(r));
  assert.ok(r.after.fds <= r.before.fds + 8, JSON.stringify(r));
});
