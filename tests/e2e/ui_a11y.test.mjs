// ui_a11y.test.mjs -- accessibility measured: axe-core in headless
// Chromium on the chat page with a conversation (thinking, code, math, a
// table, versions) at 1280x800 and 390x844 in both themes, with its
// Settings, its palette and (on the phone) its drawer: no serious or
// critical violation may remain. The screenshots of each are left in
// tests/e2e/artifacts/ to be looked at.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { why, serve, launch, cleanup, open, importConv, noSanitizerReports, MODEL, ART, DESKTOP, MOBILE } from './ui_util.mjs';

let browser, base, AXE = null;
try { AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8'); } catch { /* skipped below */ }
const skip = why || (!AXE && 'axe-core not installed (cd tests/e2e && npm ci)') || false;

before(async () => {
  if (skip) return;
  base = await serve(['-m', MODEL]);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  cleanup();
});

/* A conversation with everything the page renders: thinking, code, math, a table, two answer versions. */
const SAMPLE = {
  format: 'smolbot-conversation', version: 1,
  conversation: { title: 'Reversing a string', current_leaf: 3, thinking: 1 },
  messages: [
    { id: 1, parent: null, role: 'user', content: 'How do I reverse a string in Python? Explain the slice.' },
    { id: 2, parent: 1, role: 'assistant', content: 'An older answer.' },
    {
      id: 3, parent: 1, role: 'assistant', prompt_tokens: 412, completion_tokens: 164, prefill_ms: 120, gen_ms: 4300, finish_reason: 'stop',
      reasoning: 'The user wants a short example. Slicing with a negative step is the idiomatic way.',
      content: 'The idiomatic way is a **slice with a step of -1**:\n\n```python\ns = "smolbot"\nprint(s[::-1])  # "tobloms"\n```\n\n' +
        '- `start` and `stop` are empty;\n- the step $-1$ walks from the end: $$s_{n-1} \\dots s_0$$\n\n' +
        '| Method | Speed |\n|---|--:|\n| slice | fastest |\n| `\'\'.join(reversed(s))` | slower |\n\nSee [the docs](https://docs.python.org/3/library/stdtypes.html).',
    },
  ],
};

async function axe(page, label) {
  await page.addScriptTag({ content: AXE });
  const r = await page.evaluate(async () => {
    const res = await window.axe.run(document, { resultTypes: ['violations'] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, n: v.nodes.length, targets: v.nodes.slice(0, 12).map((x) => x.target.join(' ') + ' :: ' + (x.failureSummary || '').split('\n')[1]) }));
  });
  const bad = r.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], label + ': ' + JSON.stringify(bad, null, 1));
  return r;
}

for (const [name, viewport, scheme] of [['desktop-light', DESKTOP, 'light'], ['desktop-dark', DESKTOP, 'dark'],
  ['mobile-light', MOBILE, 'light'], ['mobile-dark', MOBILE, 'dark']]) {
  test(`axe: no serious or critical violation, ${name}; screenshot`, { skip }, async () => {
    const { ctx, page } = await open(browser, base, { viewport, scheme, bypassCSP: true, touch: viewport === MOBILE });
    await importConv(page, SAMPLE);
    await page.waitForSelector('#messages .math .katex');
    await page.locator('#messages .msg.assistant details.think summary').last().click();
    await page.screenshot({ path: join(ART, `page-${name}.png`) });
    const minor = await axe(page, name);
    // left: a combobox on a textarea (ARIA 1.2 wants an input; the palette needs the multi-line box)
    assert.deepEqual(minor.map((v) => v.id).filter((id) => id !== 'aria-allowed-role'), [], JSON.stringify(minor));
    // the dialogs and the palette too
    await page.click('[data-action="settings"]');
    await axe(page, name + ' settings');
    if (viewport === MOBILE) await page.screenshot({ path: join(ART, `settings-${name}.png`) });
    await page.click('#settings .dialog-foot button');
    if (viewport === MOBILE) { /* the conversations drawer */
      await page.click('[data-action="open-sidebar"]');
      await page.waitForFunction(() => document.body.classList.contains('drawer-open'));
      await page.screenshot({ path: join(ART, `drawer-${name}.png`) });
      await axe(page, name + ' drawer');
      await page.click('#sidebar [data-action="close-sidebar"]');
    }
    await page.fill('#input', '/');
    await page.dispatchEvent('#input', 'input');
    await page.waitForSelector('#palette:not([hidden])');
    await axe(page, name + ' palette');
    await ctx.close();
  });
}

test('the servers reported no sanitizer errors', { skip }, () => noSanitizerReports());
