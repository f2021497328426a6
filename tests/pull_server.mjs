// pull_server.mjs -- a small Hugging Face look-alike on 127.0.0.1 for tests/cli_pull.sh.
//
//   node tests/pull_server.mjs MODEL.gguf LOGFILE [OTHER.gguf]
//
// Listens on a free port and prints it as the first stdout line. Every
// request is appended to LOGFILE as "METHOD URL range=... auth=..." so the
// test can see what the client sent. Routes (HF_ENDPOINT-style paths):
//   /test/tiny/resolve/main/<name>.gguf  MODEL, with Range support (206, 416)
//     drop-*    a request without Range gets half the bytes, then the socket
//               is destroyed; a ranged request is served normally
//     corrupt-* MODEL with the GGUF tensor count overwritten (same size)
//     slow-*    half the bytes, then the response stalls (for Ctrl-C tests)
//     etag-*    sends X-Linked-Etag with the right sha256; badetag-* a wrong one
//     other-*   OTHER (a valid GGUF of another architecture) when given
//     missing-* 404
//   /private/tiny/resolve/main/...      401 unless "Authorization: Bearer sekret"
//   /api/models/test/tiny               the file list for owner/repo:QUANT names
// Anything else is 404.
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';

const [model, logfile, other] = process.argv.slice(2);
const good = fs.readFileSync(model);
const corrupt = Buffer.from(good);
corrupt.writeBigUInt64LE(0xffffffffffffn, 8); // n_tensors: absurd
const sha = crypto.createHash('sha256').update(good).digest('hex');

function body(name) {
  if (name.startsWith('missing-')) return null;
  if (name.startsWith('corrupt-')) return corrupt;
  if (name.startsWith('other-')) return other ? fs.readFileSync(other) : null;
  return good;
}

function serve(req, res, name) {
  const data = body(name);
  if (!data || !name.endsWith('.gguf')) { res.writeHead(404); res.end('Entry not found'); return; }
  const headers = { 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
  if (name.startsWith('etag-')) headers['X-Linked-Etag'] = `"${sha}"`;
  if (name.startsWith('badetag-')) headers['X-Linked-Etag'] = `"${'0'.repeat(64)}"`;
  const range = req.headers.range;
  if (range) {
    const m = /^bytes=(\d+)-$/.exec(range);
    const start = m ? Number(m[1]) : NaN;
    if (!(start < data.length)) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${data.length}` });
      res.end();
      return;
    }
    res.writeHead(206, { ...headers, 'Content-Length': data.length - start,
      'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` });
    res.end(data.subarray(start));
    return;
  }
  res.writeHead(200, { ...headers, 'Content-Length': data.length });
  if (name.startsWith('slow-')) { // half, then nothing: the client must be stopped
    res.write(data.subarray(0, data.length >> 1));
    return;
  }
  if (name.startsWith('drop-')) {
    res.write(data.subarray(0, data.length >> 1), () => setTimeout(() => res.socket.destroy(), 50));
    return;
  }
  res.end(data);
}

const server = http.createServer((req, res) => {
  fs.appendFileSync(logfile, `${req.method} ${req.url} range=${req.headers.range || '-'} auth=${req.headers.authorization || '-'}\n`);
  const url = new URL(req.url, 'http://x');
  let m;
  if (url.pathname === '/api/models/test/tiny') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ id: 'test/tiny', siblings: [
      { rfilename: 'README.md' }, { rfilename: 'tiny-Q4_K_M.gguf' }, { rfilename: 'tiny-IQ4_K_M.gguf' },
      { rfilename: 'tiny-Q8_0.gguf' }, { rfilename: 'big-Q2_K-00001-of-00002.gguf' }] }));
  } else if ((m = /^\/test\/tiny\/resolve\/main\/([^/]+)$/.exec(url.pathname))) {
    serve(req, res, m[1]);
  } else if ((m = /^\/private\/tiny\/resolve\/main\/([^/]+)$/.exec(url.pathname))) {
    if (req.headers.authorization !== 'Bearer sekret') { res.writeHead(401); res.end('Invalid credentials'); return; }
    serve(req, res, m[1]);
  } else {
    res.writeHead(404);
    res.end('not found');
  }
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
