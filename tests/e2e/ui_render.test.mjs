// ui_render.test.mjs -- code colours (highlight.js) and math (KaTeX) on the
// chat page, both served by the binary: a stored answer, the same answer
// replayed through the event stream (/continue replays it block by block),
// both themes, and formulas KaTeX refuses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { why, serve, launch, cleanup, open, setMaxTokens, command, lastAnswer, done, importConv, noSanitizerReports, MODEL, ART } from './ui_util.mjs';

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

export const RICH = {
  format: 'smolbot-conversation', version: 1,
  conversation: { title: 'Code and math', current_leaf: 2, thinking: 0 },
  messages: [
    { id: 1, parent: null, role: 'user', content: 'Show me some code and a formula.' },
    {
      id: 2, parent: 1, role: 'assistant', prompt_tokens: 40, completion_tokens: 90, prefill_ms: 30, gen_ms: 900,
      content: 'In Python:\n\n```python\ndef area(r):\n    # a circle\n    return 3.14159 * r ** 2\n```\n\n' +
        'Without a fence language:\n\n```\n#include <stdio.h>\nint main(void) {\n    printf("hello %d\\n", 42);\n    return 0;\n}\n```\n\n' +
        'The area is $A = \\pi r^2$, and \\(e^{i\\pi} + 1 = 0\\).\n\n$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$\n\n' +
        '\\[\\sum_{n=1}^{\\infty} \\frac{1}{n^2} = \\frac{\\pi^2}{6}\\]\n\nA broken one: $\\frac{1}{$ stays as written.\n',
    },
  ],
};

async function checkRendered(page) {
  const a = lastAnswer(page);
  // the fenced block: python tokens
  const py = a.locator('.code').nth(0);
  assert.equal(await py.locator('.code-lang').textContent(), 'python');
  assert.ok(await py.locator('code .hljs-keyword').count() >= 2, 'def/return coloured');
  assert.ok(await py.locator('code .hljs-comment').count() >= 1);
  assert.ok(await py.locator('code .hljs-number').count() >= 1);
  // the text is unchanged by colouring (what Copy takes)
  assert.equal(await py.locator('pre code').textContent(), 'def area(r):\n    # a circle\n    return 3.14159 * r ** 2\n');
  assert.equal(await py.locator('button.copy').count(), 1);
  // no fence language: a guess, said to be one
  const c = a.locator('.code').nth(1);
  assert.match(await c.locator('.code-lang').textContent(), /^(c|cpp) \(guess\)$/);
  assert.ok(await c.locator('code .hljs-keyword, code .hljs-meta, code .hljs-type').count() >= 1);
  // math: every delimiter typeset, the broken one shown as its source
  assert.equal(await a.locator('.math .katex').count(), 4);
  assert.equal(await a.locator('.math.display .katex-display').count(), 2);
  assert.equal(await a.locator('.math[data-tex="\\\\int_0^1 x^2\\\\,dx = \\\\frac{1}{3}"]').count(), 1, 'the \\, survived');
  const bad = a.locator('.math.math-error');
  assert.equal(await bad.count(), 1);
  assert.equal(await bad.textContent(), '\\frac{1}{');
}

test('code is coloured and math typeset, in a stored answer and both themes', { skip: why || false }, async () => {
  const { ctx, page, errors } = await open(browser, base);
  await importConv(page, RICH);
  await checkRendered(page);
  // the fonts come from the binary
  const fonts = await page.evaluate(async () => {
    await document.fonts.ready;
    return [document.fonts.check('16px KaTeX_Main'), (await fetch('/static/fonts/KaTeX_Main-Regular.woff2')).headers.get('content-type')];
  });
  assert.deepEqual(fonts, [true, 'font/woff2']);
  // copying the answer gives the formulas back as LaTeX
  const copied = await page.evaluate(() => new Promise((resolve) => {
    Object.defineProperty(navigator, 'clipboard', { value: { writeText: (t) => { resolve(t); return Promise.resolve(); } } });
    document.execCommand = () => { resolve(document.querySelector('textarea.sr-only').value); return true; };
    [...document.querySelectorAll('#messages .msg.assistant [data-copy="msg"]')].pop().click();
  }));
  assert.match(copied, /\$\$\\int_0\^1 x\^2\\,dx = \\frac\{1\}\{3\}\$\$/);
  await page.screenshot({ path: join(ART, 'code-math-light.png') });
  await page.click('[data-action="theme"]');
  const kw = await lastAnswer(page).locator('.hljs-keyword').first().evaluate((e) => getComputedStyle(e).color);
  assert.equal(kw, 'rgb(215, 166, 255)', 'dark keyword colour');
  await page.screenshot({ path: join(ART, 'code-math-dark.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('while an answer streams, blocks are coloured and typeset as they arrive', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await importConv(page, RICH);
  await setMaxTokens(page, 3);
  // /continue replays the stored answer through the event stream, then adds a few tokens
  await page.evaluate(() => {
    window.__seen = { hl: false, tex: false };
    new MutationObserver(() => {
      const a = document.querySelector('#messages .msg.assistant.streaming');
      if (!a) return;
      if (a.querySelector('.hljs-keyword')) window.__seen.hl = true;
      if (a.querySelector('.katex')) window.__seen.tex = true;
    }).observe(document.getElementById('chat'), { subtree: true, childList: true });
  });
  await command(page, '/continue');
  await page.waitForSelector('#messages .msg.assistant.streaming');
  await done(page);
  assert.deepEqual(await page.evaluate(() => window.__seen), { hl: true, tex: true });
  await checkRendered(page);
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
