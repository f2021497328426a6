// ui_attach.test.mjs -- attaching text files on the chat page (the button,
// drag and drop, paste): each goes into the message as a fenced block
// named after the file, counted by the server's tokenizer before sending;
// what does not fit the context, or is not text, is refused with why.
// Headless Chromium against `smolbot serve` with the tiny random model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { why, serve, launch, cleanup, open, newChat, setMaxTokens, done, noSanitizerReports, MODEL, ART } from './ui_util.mjs';

let browser, base;

before(async () => {
  if (why) return;
  base = await serve(['-m', MODEL]);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  cleanup();
});

const toastHas = (page, re) => page.waitForFunction((s) => !document.getElementById('toast').hidden &&
  new RegExp(s).test(document.getElementById('toast').textContent), re.source);

/* Drop or paste files made in the page. */
async function dropFiles(page, files, how) {
  await page.evaluate(([fs, h]) => {
    const dt = new DataTransfer();
    for (const f of fs) dt.items.add(new File([f.text], f.name, { type: f.type || '' }));
    if (h === 'paste') document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    else {
      const main = document.querySelector('.main');
      main.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      main.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, [files, how]);
}

test('a picked file goes into the message as a named fenced block, counted first', { skip: why || false }, async () => {
  const { ctx, page, errors } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 3);
  const code = 'def f(x):\n    return x * 2\n\nprint(f(21))\n';
  await page.setInputFiles('#file-input', { name: 'double.py', mimeType: 'text/x-python', buffer: Buffer.from(code) });
  await page.waitForSelector('#attachments .chip:has-text("double.py")');
  const meta = await page.textContent('#attachments .chip-meta');
  const n = +meta.replace(/[^\d]/g, '');
  assert.ok(n > 10 && n < 100, meta);
  assert.match(await page.textContent('#gauge-text'), new RegExp('\\+ ' + n + ' attached'));
  await page.fill('#input', 'What does it print?');
  await page.press('#input', 'Enter');
  await page.waitForSelector('#messages .msg.user');
  assert.equal(await page.locator('#messages .msg.user .text').last().textContent(),
    'double.py:\n```python\n' + code + '```\n\nWhat does it print?');
  assert.ok(await page.isHidden('#attachments'), 'sent: the chips are gone');
  await done(page);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('drag and drop and paste attach too; a file with backticks keeps its fence', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await dropFiles(page, [{ name: 'data.csv', text: 'a,b\n1,2\n', type: 'text/csv' }], 'drop');
  await page.waitForSelector('#attachments .chip:has-text("data.csv")');
  await dropFiles(page, [{ name: 'notes.md', text: 'Some ```code``` and\n```\nblock\n```\n', type: 'text/markdown' }], 'paste');
  await page.waitForSelector('#attachments .chip:has-text("notes.md")');
  assert.equal(await page.locator('#attachments .chip').count(), 2);
  await page.screenshot({ path: join(ART, 'attach.png') });
  // remove one
  await page.click('#attachments [aria-label="Remove data.csv"]');
  assert.equal(await page.locator('#attachments .chip').count(), 1);
  await setMaxTokens(page, 2);
  await page.focus('#input');
  await page.press('#input', 'Enter'); // files alone may be sent
  await page.waitForSelector('#messages .msg.user');
  const sent = await page.locator('#messages .msg.user .text').last().textContent();
  assert.ok(sent.startsWith('notes.md:\n````markdown\n'), sent);
  assert.ok(sent.endsWith('```\n````'), sent);
  await done(page);
  await ctx.close();
});

test('what does not fit, or is not text, is refused with why', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  const big = Array.from({ length: 6000 }, (_, i) => 'word' + i).join(' ');
  await page.setInputFiles('#file-input', { name: 'big.txt', mimeType: 'text/plain', buffer: Buffer.from(big) });
  await toastHas(page, /"big\.txt" is [\d,]+ tokens: .*does not fit the context of [\d,]+ tokens/);
  assert.ok(await page.isHidden('#attachments'));
  await page.setInputFiles('#file-input', { name: 'photo.png', mimeType: 'image/png', buffer: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]) });
  await toastHas(page, /"photo\.png" is not a text file/);
  await page.setInputFiles('#file-input', { name: 'bad.txt', mimeType: 'text/plain', buffer: Buffer.from([0x66, 0xff, 0xfe, 0x00]) });
  await toastHas(page, /"bad\.txt" is not UTF-8 text/);
  await page.setInputFiles('#file-input', { name: 'huge.log', mimeType: 'text/plain', buffer: Buffer.alloc(300 * 1024, 97) });
  await toastHas(page, /"huge\.log" is 300 KiB: at most 256 KiB a file/);
  assert.equal(await page.locator('#attachments .chip').count(), 0);
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
