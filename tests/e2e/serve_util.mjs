// serve_util.mjs -- start and stop `smolbot serve` for the hostile, load
// and fault suites (server.test.mjs keeps its own copy of this logic).
//
// startServer(bin, args) spawns `BIN serve --port 0 --host 127.0.0.1 ARGS`,
// reads the port from the "listening on" line and (ready) waits for
// /health 200. Every server started here is remembered; stopAll() sends
// SIGTERM, then SIGKILL after 40 s (a loaded CI machine can be slow to drain), and returns the exits and stderr so the
// caller can assert a clean end with nothing from the sanitizers.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MODEL = path.resolve(ROOT, '../shared/models/smollm3-tiny-q4_k_m.gguf');
export const SAN_BIN = ['build/san/smolbot', 'build/smolbot'].map((p) => path.join(ROOT, p)).find(existsSync);
export const REL_BIN = ['build/smolbot', 'build/san/smolbot'].map((p) => path.join(ROOT, p)).find(existsSync);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const servers = [];

// fromEnv: pass the address as $HOST/$PORT instead of options; cwd: where
// the server runs (the model lookup reads ./models).
export async function startServer(bin, args, { env = {}, ready = true, wrap = [], cwd = ROOT, fromEnv = false } = {}) {
  const where = fromEnv ? [] : ['--port', '0', '--host', '127.0.0.1'];
  const argv = [...wrap, bin, 'serve', ...where, ...args];
  const proc = spawn(argv[0], argv.slice(1), {
    cwd,
    env: { ...process.env, HOST: fromEnv ? '127.0.0.1' : '', PORT: fromEnv ? '0' : '', MODEL_PATH: '', SMOLBOT_API_KEY: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const s = { proc, out: '', err: '', pid: proc.pid };
  proc.stderr.on('data', (d) => { s.err += d; });
  s.exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  servers.push(s);
  s.url = await new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no "listening on" line in 120 s; stderr: ${s.err}`)), 120000);
    proc.stdout.on('data', (d) => {
      s.out += d;
      const m = s.out.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(t); res(m[1]); }
    });
    s.exited.then((e) => { clearTimeout(t); rej(new Error(`server exited ${JSON.stringify(e)}; stderr: ${s.err}`)); });
  });
  s.port = Number(new URL(s.url).port);
  s.stop = async (sig = 'SIGTERM') => {
    if (proc.exitCode !== null || proc.signalCode !== null) return s.exited;
    proc.kill(sig);
    const t = setTimeout(() => proc.kill('SIGKILL'), 40000);
    const e = await s.exited;
    clearTimeout(t);
    return e;
  };
  if (ready) {
    const t0 = Date.now();
    for (;;) {
      const r = await fetch(s.url + '/health').catch(() => null);
      if (r && r.status === 200) break;
      if (Date.now() - t0 > 120000) throw new Error('not healthy in 120 s');
      await sleep(100);
    }
  }
  return s;
}

export async function stopAll() {
  const live = servers.splice(0);
  const ends = await Promise.all(live.map((s) => s.stop()));
  return live.map((s, i) => ({ end: ends[i], err: s.err }));
}

// VmRSS in KiB and the number of open descriptors of a process (Linux).
export function procStats(pid) {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(st)[1]);
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  return { rssKiB: rss, fds };
}

// Send raw bytes on a fresh connection; resolves with everything the server
// sent and how the connection ended ({ data, closed, ms }). `stall`: stop
// after writing and wait for the server to close (or timeoutMs).
export function rawRequest(port, chunks, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data: data.toString('latin1'), closed, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d) => { data = Buffer.concat([data, d]); });
    sock.on('error', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('connect', () => { for (const c of chunks) sock.write(c); });
  });
}

// The function tool the agent suites call (OpenAI's shape, Ollama's too).
export const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', maxLength: 12 },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
        days: { type: 'integer' },
      },
      required: ['city'],
      additionalProperties: false,
    },
  },
};
