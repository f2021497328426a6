/* app.js -- the little JavaScript the chat page needs; htmx does the rest.
 *
 * Here: theme (follow the system, toggle, remember), the slash-command
 * palette, Enter/Shift+Enter, copy buttons, the status badge (polling), the
 * context gauge, message editing, the sidebar drawer, settings. No inline
 * scripts, handlers or style attributes exist (CSP: default-src 'self';
 * script-src 'self'; style-src 'self'); widths are set through the CSSOM.
 * Open index.html?demo (even as a file) to see sample content without a server.
 *
 * ======================= PAGE CONTRACT (server side) =======================
 * Every response is same-origin. HTML fragments are UTF-8; user text is
 * HTML-escaped; assistant text comes from src/md (safe HTML).
 * "{conv}" in any hx-* URL on the page is replaced by app.js with the current
 * conversation id (from #messages[data-conv], else localStorage, else "latest").
 *
 * GET  /                       index.html (also /index.html, /app.css, /app.js,
 *                              /favicon.svg, /static/htmx.min.js, /static/sse.min.js)
 * GET  /ui/status              JSON {"state":"loading|ready|no_model", "model":"SmolLM3-3B Q4_K_M",
 *                              "ctx_max":8192, "thinking_default":true, "busy":false,
 *                              "pull_hint":"smolbot pull", "history":"disk|memory|readonly"}
 *                              (polled every 5 s; a failed fetch
 *                              shows "reconnecting", three in a row "offline")
 * GET  /ui/conversations?q=    sidebar items, newest first, filtered by q (title/content):
 *   <li class="conv[ current]" id="conv-{id}" data-conv="{id}">
 *     <a class="conv-open" href="/ui/c/{id}" hx-get="/ui/c/{id}" hx-target="#messages" hx-swap="outerHTML">{title}</a>
 *     <button type="button" class="icon sm" data-action="rename" aria-label="Rename conversation">✎</button>
 *     <button type="button" class="icon sm" hx-delete="/ui/c/{id}" hx-target="closest li" hx-swap="outerHTML"
 *             hx-confirm="Delete this conversation?" aria-label="Delete conversation">✕</button></li>
 *   (empty list: <li class="conv-empty">No conversations yet</li>)
 * POST /ui/conversations       new conversation -> the #messages fragment below (empty);
 *                              header HX-Trigger: smolbot:convs (the sidebar reloads)
 * GET  /ui/c/{id}              (id may be "latest": the newest, created if none) ->
 *   <div id="messages" class="messages" aria-live="polite" data-conv="{id}" data-title="{title}"
 *        data-ctx-used="{tokens}" data-ctx-max="{n_ctx}" data-thinking="0|1" data-temperature="0.6"
 *        data-top-p data-top-k data-min-p data-max-tokens data-system="{escaped}"> ARTICLE... </div>
 *   (the conversation's settings: Settings shows them, every message sends them back)
 *   404 for an unknown id (app.js then loads "latest").
 * POST /ui/count               form: text -> {"tokens":N,"exact":bool} (attached files, counted before sending)
 * POST /ui/c/{id}/messages     form: text, thinking ("1" or absent), temperature, top_p, top_k,
 *                              min_p, max_tokens, system ("" = keep: the conversation keeps them);
 *                              repeat_penalty, presence_penalty, frequency_penalty, seed (this
 *                              answer only: the page keeps them per conversation)
 *                              -> USER ARTICLE + STREAMING ASSISTANT ARTICLE (appended to #messages);
 *                              409 with a plain-text reason if a generation is running.
 * GET  /ui/c/{id}/stream/{msg} text/event-stream for one answer (GET only: htmx's SSE
 *                              extension). Events (multi-line data: one "data:" line each):
 *     think   escaped reasoning text to append            thought  "212 tokens · 4.1 s" (thinking ended)
 *     block   finished markdown block(s), HTML to append  tail     HTML of the unfinished tail (replaces; "" to clear)
 *     stats   escaped "TTFT 120 ms · 35.2 tok/s · 212 tokens"; the line may carry
 *             <span data-ctx-used="N" data-ctx-max="M">…</span> to move the gauge
 *     error   escaped message                              done     "" (last event; the page closes the stream)
 *     loading escaped "Loading {model}… 3 s": the answer's model is loading (first, then about every
 *             second); "" when the answer starts (a failed load: error, stats, done)
 *   Send ": ping" comments while waiting. For a message that already finished
 *   answer 204 (EventSource then stops reconnecting).
 * POST /ui/c/{id}/stop         204; the stream ends with tail "" + done.
 * POST /ui/c/{id}/regenerate   -> a new STREAMING ASSISTANT ARTICLE that replaces the last one (outerHTML);
 *                              the old answer stays as a sibling version.
 * POST /ui/c/{id}/switch/{msg}?dir=-1|1  show the previous/next sibling of {msg} (the newest
 *                              branch below it) -> the #messages fragment; 409 when there is none.
 * Articles of messages with siblings carry, first in .msg-actions:
 *   <span class="versions" role="group" aria-label="Versions"><button data-switch="-1" …>‹</button>
 *     <span class="ver-pos">2/3</span><button data-switch="1" …>›</button></span>
 * POST /ui/c/{id}/continue     -> the last assistant article again, streaming: the server replays
 *                              the existing answer as block events, then continues.
 * POST /ui/c/{id}/messages/{msg}/edit  form: text, thinking, temperature -> drops {msg} and all
 *                              after it, then answers like POST .../messages (replaces from {msg} on).
 * POST /ui/c/{id}/clear        a new empty conversation with the same settings -> its #messages
 *                              fragment; HX-Trigger smolbot:cleared = the old id, which the page
 *                              deletes when its Undo toast is gone (Undo reopens it instead).
 * POST /ui/c/{id}/reset        form: the page's defaults -> sampling settings back to the built-in
 *                              defaults, then those; the cached model state (KV) is dropped;
 *                              -> the #messages fragment (with the settings).
 * POST /ui/c/{id}/rename       form: title -> the updated sidebar <li>.
 * DELETE /ui/c/{id}            "" (200) + HX-Trigger: smolbot:convs.
 * POST /ui/import               body: smolbot's JSON export, ChatGPT's conversations.json or an Open WebUI
 *                              chat export (one or an array) -> <p class="import-done" data-conv="{first id}"
 *                              data-count="N">…</p> + HX-Trigger smolbot:convs; 400 with the reason
 *                              (and nothing imported) for a file it cannot read.
 * GET  /ui/c/{id}/export?fmt=md|json[&branch=1]   attachment (Content-Disposition): json has every
 *                              version (the tree), branch=1 only the shown branch; md the shown branch.
 * GET  /ui/quote?conv={id}     text/event-stream, no model needed: a short quote as
 *                              block/tail/stats/done events (tests the stream path);
 *                              POST /ui/c/{id}/stop stops the quotes shown in {id} only.
 *
 * USER ARTICLE:
 *   <article class="msg user" id="m-{msg}" data-msg="{msg}">
 *     <div class="bubble"><div class="text">{escaped text}</div></div>
 *     <div class="msg-actions"><button type="button" class="icon sm" data-copy="msg" aria-label="Copy message">Copy</button>
 *       <button type="button" class="icon sm" data-action="edit" aria-label="Edit message">Edit</button></div></article>
 * ASSISTANT ARTICLE (finished; streaming adds the attributes marked *):
 *   <article class="msg assistant[ streaming*]" id="m-{msg}" data-msg="{msg}"
 *            *sse-connect="/ui/c/{id}/stream/{msg}" *sse-close="done">
 *     <details class="think[ has-text]"[ open*]><summary>Thinking <span class="think-meta" *sse-swap="thought">{meta}</span></summary>
 *       <div class="think-body" *sse-swap="think" *hx-swap="beforeend">{escaped reasoning}</div></details>
 *     <div class="bubble">*<div class="loading" role="status" sse-swap="loading" hx-swap="innerHTML"></div>
 *       <div class="md" *sse-swap="block" *hx-swap="beforeend">{html}</div>
 *       <div class="tail" *sse-swap="tail"></div><div class="err" *sse-swap="error"></div></div>
 *     <div class="msg-foot"><span class="stats" *sse-swap="stats">{stats}</span><span class="msg-actions">
 *       <button type="button" class="icon sm" data-copy="msg" aria-label="Copy answer">Copy</button>
 *       <button type="button" class="icon sm last-only" data-cmd="regenerate" aria-label="Regenerate answer">Regenerate</button>
 *       <button type="button" class="icon sm last-only" data-cmd="continue" aria-label="Continue answer">Continue</button>
 *     </span></div></article>
 *   (class "has-text" on .think when there is reasoning; app.js adds it while streaming.)
 * Code blocks inside .md are src/md's <div class="code">…<button class="copy" data-copy="code">;
 * app.js colours them (highlight.js: the fence's language, else a confident guess, else none).
 * Math is src/md's <span class="math[ display]">{escaped LaTeX}</span>; app.js typesets it
 * with KaTeX (a formula KaTeX refuses stays as its source, class math-error).
 * ============================================================================
 */
(function () {
  'use strict';
  var LS = window.localStorage;
  function get(k, d) { try { var v = LS.getItem('smolbot.' + k); return v === null ? d : v; } catch (e) { return d; } }
  function set(k, v) { try { LS.setItem('smolbot.' + k, v); } catch (e) { /* private mode */ } }

  /* ---- theme: runs before first paint ---- */
  var root = document.documentElement;
  function applyTheme(t) { if (t === 'light' || t === 'dark') root.dataset.theme = t; else delete root.dataset.theme; }
  applyTheme(get('theme', 'auto'));
  function isDark() {
    return root.dataset.theme ? root.dataset.theme === 'dark' : window.matchMedia('(prefers-color-scheme: dark)').matches;
  }
  function setTheme(t) {
    if (t !== 'light' && t !== 'dark' && t !== 'auto') t = isDark() ? 'light' : 'dark';
    set('theme', t); applyTheme(t);
    var sel = document.getElementById('theme-select'); if (sel) sel.value = t;
    return t;
  }
  var qt = /[?&]theme=(light|dark)/.exec(location.search); if (qt) applyTheme(qt[1]); /* for screenshots */

  document.addEventListener('DOMContentLoaded', init);

  var $ = function (s, r) { return (r || document).querySelector(s); };
  var input, palette, state = { status: 'loading', fails: 0, ctxMax: 0 };

  function convId() {
    var m = document.getElementById('messages');
    return (m && m.dataset.conv) || get('conv', 'latest');
  }

  /* action: {label, fn} adds a button (Undo) that runs fn and closes the toast */
  function toast(text, ms, action) {
    var t = $('#toast'), was = toast.pending;
    toast.pending = action && action.expire ? action : null;
    if (was) was.expire(); /* a newer toast ends the undo time of the one it replaces */
    t.textContent = text; t.hidden = false;
    if (action) {
      var b = document.createElement('button'); b.type = 'button'; b.className = 'btn toast-action'; b.textContent = action.label;
      b.addEventListener('click', function () { t.hidden = true; clearTimeout(toast.timer); toast.pending = null; action.fn(); });
      t.appendChild(b);
    }
    clearTimeout(toast.timer); toast.timer = setTimeout(function () {
      t.hidden = true;
      if (toast.pending) { var p = toast.pending; toast.pending = null; p.expire(); }
    }, ms || 3500);
  }

  /* ---- commands ---- */
  var CMDS = [
    { name: 'new', cat: 'Chat', desc: 'Start a new conversation' },
    { name: 'clear', cat: 'Chat', desc: 'Delete the messages of this conversation' },
    { name: 'regenerate', cat: 'Chat', desc: 'Answer the last message again' },
    { name: 'continue', cat: 'Chat', desc: 'Continue the last answer' },
    { name: 'export', cat: 'Chat', arg: '[md|json|branch]', desc: 'Download it (json: every version; branch: the one shown)' },
    { name: 'model', cat: 'Model', arg: '[name]', desc: 'Show the model, or switch this conversation to another' },
    { name: 'status', cat: 'Model', desc: 'Server and model status' },
    { name: 'thinking', cat: 'Model', desc: 'Turn thinking on or off' },
    { name: 'temp', cat: 'Model', arg: '[value]', desc: 'Show or set the temperature (0–2)' },
    { name: 'reset', cat: 'Model', desc: 'Sampling settings back to the defaults; forget cached context' },
    { name: 'theme', cat: 'Utility', arg: '[light|dark|auto]', desc: 'Switch the colour theme' },
    { name: 'settings', cat: 'Utility', desc: 'Open settings' },
    { name: 'help', cat: 'Utility', desc: 'List the commands and keys' },
    { name: 'summarize', cat: 'Quick actions', desc: 'Ask for a summary of this conversation' },
    { name: 'quote', cat: 'Quick actions', desc: 'A quote, streamed (works without a model)' }
  ];

  function post(path, target, swap, values) {
    if (!window.htmx) { toast('Not connected to the server'); return; }
    return htmx.ajax('POST', path.replace('{conv}', encodeURIComponent(convId())),
      { target: target, swap: swap || 'none', values: values || {} });
  }
  function lastAssistant() { var a = document.querySelectorAll('#messages .msg.assistant'); return a[a.length - 1]; }
  /* The settings of the conversation shown (Settings and the header switch);
   * sent with every message, so the server keeps them with the conversation. */
  var FIELDS = [['temperature', '#temperature'], ['top_p', '#top-p'], ['top_k', '#top-k'], ['min_p', '#min-p'],
    ['max_tokens', '#max-tokens'], ['system', '#system-prompt']];
  /* Samplers the server does not store: kept here per conversation
   * (localStorage "x.{conv}"), sent with every message all the same. */
  var EXTRA = [['repeat_penalty', '#repeat-penalty', '1'], ['presence_penalty', '#presence-penalty', '0'],
    ['frequency_penalty', '#frequency-penalty', '0'], ['seed', '#seed', '']];
  function formValues() {
    var v = { thinking: $('#thinking').checked ? '1' : '',
      model: $('#model-pick').hidden ? '' : $('#model-pick').value };
    FIELDS.concat(EXTRA).forEach(function (f) { v[f[0]] = $(f[1]).value; });
    return v;
  }
  function extraFill(x) {
    var d = defaults();
    EXTRA.forEach(function (f) { $(f[1]).value = x && x[f[0]] !== undefined ? x[f[0]] : d[f[0]] !== undefined ? d[f[0]] : f[2]; });
  }
  function extraSave() {
    var x = {}; EXTRA.forEach(function (f) { x[f[0]] = $(f[1]).value; });
    set('x.' + convId(), JSON.stringify(x));
  }
  function extraLoad(conv) { try { return JSON.parse(get('x.' + conv, 'null')); } catch (e) { return null; } }
  /* Defaults for new chats (and what /reset goes back to): saved from Settings. */
  function defaults() { try { return JSON.parse(get('defaults', '{}')) || {}; } catch (e) { return {}; } }
  /* Fill Settings from a #messages fragment's data-* (the conversation's settings). */
  function settingsFrom(m) {
    if (!m || !m.dataset || m.dataset.temperature === undefined) return;
    var d = m.dataset;
    setTemp(d.temperature); $('#top-p').value = d.topP; $('#top-k').value = d.topK; $('#min-p').value = d.minP;
    $('#max-tokens').value = d.maxTokens; $('#system-prompt').value = d.system || '';
    setThinking(d.thinking === '1'); extraFill(extraLoad(d.conv)); outputs();
  }
  function outputs() {
    $('#top-p-out').textContent = $('#top-p').value; $('#min-p-out').textContent = $('#min-p').value;
  }

  /* ---- the model picker (a server with several models) ---- */
  function fillPicker(models) {
    var p = $('#model-pick'), cur = p.value || get('model', '');
    p.textContent = '';
    models.forEach(function (m) { /* text, never markup: names come from file names */
      var o = document.createElement('option');
      o.value = m.name; o.disabled = !m.supported; o.dataset.loaded = m.loaded ? '1' : '0';
      o.textContent = m.name + ' · ' + m.quant + ' · ' + (m.size_mb >= 1024 ? (m.size_mb / 1024).toFixed(1) + ' GB' : Math.round(m.size_mb) + ' MB') +
        ' · ' + (!m.supported ? 'unsupported' : m.loaded ? 'loaded' : m.loading ? 'loading' : 'not loaded');
      p.appendChild(o);
    });
    if (cur && pickerHas(cur)) p.value = cur;
    p.hidden = false; $('#model-name').hidden = true;
  }
  function pickerHas(name) { return Array.prototype.some.call($('#model-pick').options, function (o) { return o.value === name && !o.disabled; }); }
  function pickModel(name) { $('#model-pick').value = name; set('model', name); }
  document.addEventListener('change', function (e) { if (e.target && e.target.id === 'model-pick') set('model', e.target.value); });

  function run(name, arg) {
    arg = (arg || '').trim();
    switch (name) {
      case 'new': post('/ui/conversations', '#messages', 'outerHTML'); break;
      case 'clear': post('/ui/c/{conv}/clear', '#messages', 'outerHTML'); break;
      case 'reset': {
        var d = defaults(), v = { thinking: d.thinking === undefined ? (state.thinkingDefault !== false ? '1' : '') : d.thinking };
        FIELDS.forEach(function (f) { if (f[0] !== 'system' && d[f[0]] !== undefined) v[f[0]] = d[f[0]]; });
        try { localStorage.removeItem('smolbot.x.' + convId()); } catch (e) { /* private mode */ }
        var p = post('/ui/c/{conv}/reset', '#messages', 'outerHTML', v);
        if (p) p.then(function () { toast('Sampling settings back to the defaults (temperature ' + $('#temperature').value + '); cached context dropped'); });
        break;
      }
      case 'regenerate': case 'continue': {
        var last = lastAssistant();
        if (!last) { toast('No answer to ' + name + ' yet'); break; }
        post('/ui/c/{conv}/' + name, last, 'outerHTML', formValues()); break;
      }
      case 'export': {
        var fmt = arg === 'json' || arg === 'branch' ? 'json' : 'md';
        var a = document.createElement('a');
        a.href = '/ui/c/' + encodeURIComponent(convId()) + '/export?fmt=' + fmt + (arg === 'branch' ? '&branch=1' : ''); a.download = '';
        document.body.appendChild(a); a.click(); a.remove(); break;
      }
      case 'thinking': setThinking(!$('#thinking').checked); toast('Thinking ' + ($('#thinking').checked ? 'on' : 'off')); break;
      case 'temp':
        if (!arg) { toast('Temperature: ' + ($('#temperature').value || 'model default')); break; }
        var v = /^(\d+(\.\d*)?|\.\d+)$/.test(arg) ? parseFloat(arg) : NaN; /* "0.4 please" is not a number */
        if (!(v >= 0 && v <= 2)) { toast('Temperature must be one number from 0 to 2, not "' + arg.slice(0, 40) + '"'); break; }
        setTemp(String(v)); toast('Temperature set to ' + v); break;
      case 'model':
        if (arg && !$('#model-pick').hidden) {
          if (!pickerHas(arg)) { toast('No model named "' + arg + '" can be served'); break; }
          pickModel(arg); toast('Model for the next answers: ' + arg); break;
        }
        pollStatus('model'); break;
      case 'status': pollStatus('status'); break;
      case 'theme': toast('Theme: ' + setTheme(arg || 'toggle')); break;
      case 'help': openHelp(); break;
      case 'settings': openSettings(); break;
      case 'summarize':
        input.value = 'Summarize our conversation so far in a few bullet points.';
        submit(); break;
      case 'quote': {
        var m = document.getElementById('messages');
        var art = document.createElement('article');
        art.className = 'msg assistant streaming';
        art.setAttribute('sse-connect', '/ui/quote?conv=' + encodeURIComponent(convId())); art.setAttribute('sse-close', 'done');
        /* every swap spelled out: none may inherit #messages' own hx-swap */
        art.innerHTML = '<div class="bubble"><div class="md" sse-swap="block" hx-swap="beforeend"></div>' +
          '<div class="tail" sse-swap="tail" hx-swap="innerHTML"></div><div class="err" sse-swap="error" hx-swap="innerHTML"></div></div>' +
          '<div class="msg-foot"><span class="stats" sse-swap="stats" hx-swap="innerHTML"></span></div>';
        m.appendChild(art); if (window.htmx) htmx.process(art); scrollDown(true); break;
      }
    }
  }

  function setTemp(v) { $('#temperature').value = v; var r = $('#temp-range'); if (r) { r.value = v || 0.6; $('#temp-out').textContent = v || 'default'; } }
  function setThinking(on) {
    if (on === null) on = state.thinkingDefault !== false;
    $('#thinking').checked = on; $('#thinking-2').checked = on;
  }

  /* ---- palette ---- */
  var pal = { open: false, items: [], active: 0, start: 0 };

  /* The command word being typed: "/" at the start of the message, up to the
   * caret ("a/b" or "see /etc" later in a message is text, not a command). */
  function slashContext() {
    var pos = input.selectionStart, text = input.value.slice(0, pos);
    var m = /^()\/([a-z]*)$/i.exec(text);
    if (!m) return null;
    return { start: pos - m[2].length - 1, query: m[2].toLowerCase() };
  }

  function renderPalette() {
    var ctx = slashContext();
    if (!ctx) return closePalette();
    pal.start = ctx.start;
    pal.items = CMDS.filter(function (c) { return c.name.indexOf(ctx.query) === 0; })
      .concat(CMDS.filter(function (c) { return ctx.query && c.name.indexOf(ctx.query) > 0; }));
    var html = '', cat = null, cats = ['Chat', 'Model', 'Utility', 'Quick actions'];
    /* keep category order; items within keep their order */
    pal.items.sort(function (a, b) { return cats.indexOf(a.cat) - cats.indexOf(b.cat); });
    if (pal.active >= pal.items.length) pal.active = 0;
    pal.items.forEach(function (c, i) {
      if (c.cat !== cat) {
        cat = c.cat;
        html += '<li class="group" role="presentation" id="grp-' + i + '">' + cat + '</li>';
      }
      html += '<li role="option" id="cmd-' + c.name + '" data-i="' + i + '" aria-selected="' + (i === pal.active) + '">' +
        '<span class="cmd">/' + c.name + (c.arg ? ' <span class="arg">' + c.arg + '</span>' : '') + '</span>' +
        '<span class="desc">' + c.desc + '</span></li>';
    });
    if (!pal.items.length) html = '<li class="empty" role="presentation">No command matches</li>';
    palette.innerHTML = html;
    palette.hidden = false; pal.open = true;
    input.setAttribute('aria-expanded', 'true');
    markActive();
  }
  function markActive() {
    var opts = palette.querySelectorAll('[role="option"]');
    opts.forEach(function (o, i) { o.setAttribute('aria-selected', i === pal.active ? 'true' : 'false'); });
    if (opts[pal.active]) {
      input.setAttribute('aria-activedescendant', opts[pal.active].id);
      opts[pal.active].scrollIntoView({ block: 'nearest' });
    } else input.removeAttribute('aria-activedescendant');
  }
  function closePalette() {
    if (!palette) return;
    palette.hidden = true; pal.open = false; pal.active = 0;
    input.setAttribute('aria-expanded', 'false'); input.removeAttribute('aria-activedescendant');
  }
  function complete(c) { /* replace "/que" with "/quote " */
    var before = input.value.slice(0, pal.start), after = input.value.slice(input.selectionStart);
    input.value = before + '/' + c.name + ' ' + after.replace(/^\S*/, '').replace(/^ /, '');
    var p = before.length + c.name.length + 2; input.setSelectionRange(p, p);
  }
  function choose(c) {
    /* take the argument typed after the command, drop the command text, run */
    var before = input.value.slice(0, pal.start), rest = input.value.slice(pal.start);
    var m = /^\/\S*\s*([^\n]*)/.exec(rest);
    var arg = c.arg && m ? m[1] : '';
    input.value = (before + rest.slice(m ? m[0].length : 0)).trim();
    closePalette(); autosize();
    run(c.name, arg);
  }

  /* A whole-line command typed and sent with Enter ("/temp 0.3") runs too. */
  function typedCommand() {
    var m = /^\s*\/([a-z]+)(?:\s+(.*))?$/i.exec(input.value);
    if (!m) return null;
    var c = CMDS.find(function (x) { return x.name === m[1].toLowerCase(); });
    return c ? { c: c, arg: m[2] || '' } : null;
  }

  function onKey(e) {
    if (pal.open && pal.items.length) {
      if (e.key === 'ArrowDown') { pal.active = (pal.active + 1) % pal.items.length; markActive(); e.preventDefault(); return; }
      if (e.key === 'ArrowUp') { pal.active = (pal.active + pal.items.length - 1) % pal.items.length; markActive(); e.preventDefault(); return; }
      if (e.key === 'Tab') { complete(pal.items[pal.active]); renderPalette(); closePalette(); e.preventDefault(); return; }
      if (e.key === 'Enter' && !e.shiftKey) {
        var t = typedCommand();
        choose(t && t.c.arg ? t.c : pal.items[pal.active]); e.preventDefault(); return;
      }
    }
    if (pal.open && e.key === 'Escape') { closePalette(); e.preventDefault(); return; }
    if (e.key === 'ArrowUp' && !input.value && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) { /* edit the last message */
      var us = document.querySelectorAll('#messages .msg.user');
      if (us.length && !document.body.classList.contains('is-streaming')) { e.preventDefault(); startEdit(us[us.length - 1]); }
      return;
    }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      var tc = typedCommand();
      if (tc) { input.value = ''; autosize(); run(tc.c.name, tc.arg); return; }
      submit();
    }
  }

  function submit() {
    if (!input.value.trim() && !attached.length) return;
    if (document.body.classList.contains('is-streaming')) { /* sent when the answer ends */
      state.queued = true; document.body.classList.add('queued');
      toast('Queued: your message is sent when this answer ends (Esc stops it)');
      return;
    }
    if (state.status === 'no_model') { toast('No model loaded: run "smolbot pull", then restart the server'); return; }
    if (attached.length) { var why = wontFit(Math.ceil(input.value.length / 3.5), 'The message'); if (why) { toast(why, 8000); return; } }
    var form = $('#composer');
    if (form.requestSubmit) form.requestSubmit(); else form.dispatchEvent(new Event('submit', { cancelable: true }));
  }

  function autosize() { input.style.height = 'auto'; input.style.height = Math.min(input.scrollHeight, window.innerHeight * 0.4) + 'px'; }

  /* ---- code colours and math (highlight.js, KaTeX; both served by smolbot) ----
   * Applied to what arrives: a conversation, a finished block, the
   * unfinished tail (re-rendered by every tail event, so it is cheap there:
   * no language guessing until the block is finished). */
  function enhance(el, partial) {
    if (!el || !el.querySelectorAll) return;
    if (window.hljs) el.querySelectorAll('.code pre code:not([data-hl])').forEach(function (c) {
      var fenced = /(?:^|\s)language-(\S+)/.exec(c.className), text = c.textContent, r = null;
      var label = c.closest('.code') && c.closest('.code').querySelector('.code-lang');
      try {
        if (fenced && hljs.getLanguage(fenced[1])) r = hljs.highlight(text, { language: fenced[1], ignoreIllegals: true });
        else if (!fenced && !partial) {
          r = hljs.highlightAuto(text);
          if (r.relevance < 5 || !r.language) r = null; /* not sure: plain text */
          else if (label) label.textContent = r.language + ' (guess)';
        }
      } catch (e) { r = null; }
      if (partial && !r) return;
      c.dataset.hl = r ? (r.language || '') : 'none';
      if (r) { c.innerHTML = r.value; c.classList.add('hljs'); } /* hljs escapes the text */
    });
    if (window.katex) el.querySelectorAll('.math:not([data-tex])').forEach(function (m) {
      var src = m.textContent; m.dataset.tex = src;
      try {
        katex.render(src, m, { displayMode: m.classList.contains('display'), throwOnError: true, output: 'htmlAndMathml' });
      } catch (e) { /* shown as its source, the reason on hover */
        m.textContent = src; m.classList.add('math-error'); m.title = String(e.message || e).slice(0, 200);
      }
    });
  }
  /* The text of a rendered answer with formulas back as their source. */
  function sourceText(el) {
    if (!el.querySelector('.math[data-tex]')) return el.innerText;
    var c = el.cloneNode(true);
    c.querySelectorAll('.math[data-tex]').forEach(function (m) {
      var d = m.classList.contains('display');
      m.textContent = (d ? '$$' : '$') + m.dataset.tex + (d ? '$$' : '$');
    });
    c.className = 'sr-only'; document.body.appendChild(c); /* innerText needs layout */
    var t = c.innerText; c.remove(); return t;
  }

  /* ---- attached text files ----
   * Dropped, pasted or picked files (text, Markdown, code, CSV, JSON) go
   * into the message as fenced blocks named after the file. Each is counted
   * by the server's tokenizer (POST /ui/count) when attached: the gauge
   * shows it, and what does not fit the context is refused, with why. */
  var ATTACH_MAX = 256 * 1024, attached = [];
  var TEXT_EXT = ('txt md markdown csv tsv json jsonl ndjson xml yaml yml toml ini cfg conf log tex rst org diff patch ' +
    'c h cpp hpp cc cxx py js mjs cjs ts tsx jsx java go rs rb php sh bash zsh fish sql html htm css scss less swift kt kts ' +
    'scala r lua pl pm dart ex exs hs ml clj cs vb ps1 bat mk cmake gradle proto graphql vue svelte env gitignore dockerfile makefile').split(' ');
  var LANG = { py: 'python', js: 'javascript', mjs: 'javascript', cjs: 'javascript', ts: 'typescript', tsx: 'tsx', jsx: 'jsx',
    md: 'markdown', markdown: 'markdown', sh: 'bash', bash: 'bash', zsh: 'bash', yml: 'yaml', yaml: 'yaml', rs: 'rust', rb: 'ruby',
    h: 'c', c: 'c', hpp: 'cpp', cc: 'cpp', cxx: 'cpp', cpp: 'cpp', kt: 'kotlin', kts: 'kotlin', cs: 'csharp', pl: 'perl', pm: 'perl',
    hs: 'haskell', ex: 'elixir', exs: 'elixir', htm: 'html', mk: 'makefile', ps1: 'powershell', bat: 'dos' };
  function extOf(name) { var m = /\.([^.]+)$/.exec(name.toLowerCase()); return m ? m[1] : name.toLowerCase(); }
  function fencedFile(name, text) {
    var runs = text.match(/`{3,}/g) || [], n = 3;
    runs.forEach(function (r) { n = Math.max(n, r.length + 1); });
    var f = new Array(n + 1).join('`'), ext = extOf(name), lang = LANG[ext] || (ext === 'txt' || ext === name.toLowerCase() ? '' : ext);
    return name + ':\n' + f + lang + '\n' + text.replace(/\n?$/, '\n') + f;
  }
  function pendingTokens() { return attached.reduce(function (t, a) { return t + a.tokens; }, 0); }
  /* 0 if n more tokens fit the context (with room for an answer), else why not */
  function wontFit(n, what) {
    var max = state.ctxMax, used = state.ctxUsed || 0, room = Math.min(512, Math.floor(max / 8));
    if (!max || used + pendingTokens() + n + room <= max) return null;
    return what + ' is ' + n.toLocaleString() + ' tokens: with this conversation (' + (used + pendingTokens()).toLocaleString() +
      ' tokens) and room for an answer it does not fit the context of ' + max.toLocaleString() + ' tokens. Start a new chat or attach less.';
  }
  function renderAttached() {
    var ul = $('#attachments'), html = '';
    attached.forEach(function (a, i) {
      var n = a.name.replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; });
      html += '<li class="chip"><span class="chip-name">' + n + '</span><span class="chip-meta">' + a.tokens.toLocaleString() +
        ' tokens</span><button type="button" class="icon sm" data-unattach="' + i + '" aria-label="Remove ' + n + '">✕</button></li>';
    });
    ul.innerHTML = html; ul.hidden = !attached.length;
    gauge(state.ctxUsed, state.ctxMax);
  }
  function attachFiles(files) {
    [].slice.call(files || []).forEach(function (file) {
      var ext = extOf(file.name);
      if (TEXT_EXT.indexOf(ext) < 0 && !/^text\/|json|xml|yaml|csv/.test(file.type || '')) {
        toast('"' + file.name + '" is not a text file: text, Markdown, code, CSV and JSON can be attached.'); return;
      }
      if (file.size > ATTACH_MAX) { toast('"' + file.name + '" is ' + Math.round(file.size / 1024) + ' KiB: at most ' + ATTACH_MAX / 1024 + ' KiB a file.'); return; }
      file.arrayBuffer().then(function (buf) {
        var text;
        try { text = new TextDecoder('utf-8', { fatal: true }).decode(buf); } catch (e) { text = null; }
        if (text === null || text.indexOf('\u0000') >= 0) { toast('"' + file.name + '" is not UTF-8 text.'); return null; }
        var block = fencedFile(file.name, text);
        var body = new URLSearchParams({ text: block });
        return fetch('/ui/count', { method: 'POST', headers: { 'HX-Request': 'true' }, body: body }).then(function (r) {
          if (!r.ok) throw new Error('count ' + r.status);
          return r.json();
        }).then(function (j) {
          var why = wontFit(j.tokens, '"' + file.name + '"');
          if (why) { toast(why, 8000); return; }
          attached.push({ name: file.name, block: block, tokens: j.tokens }); renderAttached();
        });
      }).catch(function () { toast('Could not read "' + file.name + '"'); });
    });
  }

  /* ---- import: smolbot's export, ChatGPT's conversations.json, Open WebUI's chats ---- */
  function importFile(f) {
    f.text().then(function (text) {
      return fetch('/ui/import', { method: 'POST', headers: { 'HX-Request': 'true', 'Content-Type': 'application/json' }, body: text });
    }).then(function (r) {
      return r.text().then(function (t) { return { ok: r.ok, status: r.status, text: t }; });
    }).then(function (res) {
      if (!res.ok) { toast('Import failed: ' + (res.text || 'error ' + res.status).slice(0, 300), 8000); return; }
      var d = document.createElement('div'); d.innerHTML = res.text; /* our own escaped fragment */
      var p = d.querySelector('.import-done');
      toast(p.textContent.replace(/\s*Open it\s*$/, ''), 6000);
      document.body.dispatchEvent(new Event('smolbot:convs'));
      document.body.classList.remove('drawer-open');
      htmx.ajax('GET', '/ui/c/' + encodeURIComponent(p.dataset.conv), { target: '#messages', swap: 'outerHTML' });
      if ($('#settings').open) $('#settings').close();
    }).catch(function () { toast('Could not read "' + f.name + '"'); });
  }

  /* ---- copy ---- */
  function copyText(text, btn) {
    function ok() { btn.classList.add('copied'); var l = btn.textContent; if (l === 'Copy') btn.textContent = 'Copied'; setTimeout(function () { btn.classList.remove('copied'); if (btn.textContent === 'Copied') btn.textContent = 'Copy'; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(ok, function () { fallbackCopy(text) && ok(); });
    else if (fallbackCopy(text)) ok();
  }
  function fallbackCopy(text) { /* http://LAN-address is not a secure context */
    var ta = document.createElement('textarea'); ta.value = text; ta.setAttribute('readonly', '');
    ta.className = 'sr-only'; document.body.appendChild(ta); ta.select();
    var ok = false; try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    ta.remove(); input && input.focus(); return ok;
  }

  /* ---- editing a user message ---- */
  function startEdit(art) {
    if (art.classList.contains('editing')) return;
    var text = $('.text', art).textContent;
    art.classList.add('editing');
    var bubble = $('.bubble', art), saved = bubble.innerHTML;
    bubble.innerHTML = '<label class="sr-only" for="edit-' + art.dataset.msg + '">Edit message</label>' +
      '<textarea class="edit-box" id="edit-' + art.dataset.msg + '"></textarea>' +
      '<div class="edit-actions"><button type="button" class="btn" data-edit="cancel">Cancel</button>' +
      '<button type="button" class="btn send-edit" data-edit="save">Save &amp; send</button></div>';
    var box = $('.edit-box', bubble); box.value = text; box.focus();
    bubble.addEventListener('click', function h(e) {
      var b = e.target.closest('[data-edit]'); if (!b) return;
      bubble.removeEventListener('click', h);
      if (b.dataset.edit === 'cancel' || !box.value.trim()) { bubble.innerHTML = saved; art.classList.remove('editing'); return; }
      while (art.nextElementSibling) art.nextElementSibling.remove();
      var v = formValues(); v.text = box.value;
      post('/ui/c/{conv}/messages/' + encodeURIComponent(art.dataset.msg) + '/edit', art, 'outerHTML', v);
    });
    box.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('[data-edit="save"]', bubble).click(); }
      if (e.key === 'Escape') { e.preventDefault(); $('[data-edit="cancel"]', bubble).click(); }
    });
  }

  function startRename(li) {
    var a = $('.conv-open', li); if (!a || $('input.rename', li)) return;
    var inp = document.createElement('input'); inp.className = 'rename inset'; inp.value = a.textContent;
    inp.setAttribute('aria-label', 'Conversation title');
    a.hidden = true; li.insertBefore(inp, a); inp.focus(); inp.select();
    var done = false;
    function finish(save) {
      if (done) return; done = true;
      if (save && inp.value.trim() && inp.value !== a.textContent)
        htmx.ajax('POST', '/ui/c/' + encodeURIComponent(li.dataset.conv) + '/rename', { target: li, swap: 'outerHTML', values: { title: inp.value.trim() } });
      inp.remove(); a.hidden = false;
    }
    inp.addEventListener('keydown', function (e) { if (e.key === 'Enter') finish(true); if (e.key === 'Escape') finish(false); });
    inp.addEventListener('blur', function () { finish(true); });
  }

  /* ---- status badge, gauge ---- */
  function setBadge(s) {
    var b = $('#status-badge'), label = { ready: 'ready', loading: 'loading', no_model: 'no model', offline: 'offline', reconnecting: 'reconnecting' }[s] || s;
    b.dataset.state = s; b.textContent = label; document.body.dataset.state = s;
  }
  function pollStatus(report) {
    return fetch('/ui/status', { cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { location.href = '/'; throw new Error('signed out'); } /* key-protected server: sign in again */
      return r.json();
    }).then(function (j) {
      state.fails = 0; state.status = j.state;
      setBadge(j.state);
      if (j.model) $('#model-name').textContent = j.model;
      if (j.models) fillPicker(j.models);
      if (j.ctx_max) state.ctxMax = j.ctx_max;
      if (state.thinkingDefault === undefined) state.thinkingDefault = j.thinking_default !== false;
      state.history = j.history;
      if (report === 'model') toast(j.state === 'no_model' ? 'No model loaded.\nGet it with: ' + (j.pull_hint || 'smolbot pull') :
        'Model: ' + (j.model || 'none') + '\nFile: ' + (j.model_file || '?') + '\nQuant: ' + (j.quant || '?') +
        '\nContext: ' + (j.ctx_max || '?') + ' tokens' + (j.params ? '\nParameters: ' + (j.params / 1e9 >= 0.1 ? (j.params / 1e9).toFixed(2) + ' B' : (j.params / 1e6).toFixed(1) + ' M') : '') +
        (j.n_layer ? '\nLayers: ' + j.n_layer + ', width ' + j.n_embd : ''), 8000);
      else if (report) toast('State: ' + j.state + (j.state === 'no_model' ? ' (get it with: ' + (j.pull_hint || 'smolbot pull') + ')' : '') +
        '\nUptime: ' + fmtDur(j.uptime_s || 0) + '\nMemory: ' + Math.round(j.rss_mb || 0) + ' MiB' +
        '\nActive streams: ' + (j.streams || 0) + ', queue: ' + (j.queued || 0) +
        '\nLast speed: ' + (j.tok_s ? j.tok_s.toFixed(1) + ' tok/s' : '–') + (j.ttft_ms ? ', TTFT ' + Math.round(j.ttft_ms) + ' ms' : '') +
        (j.models ? '\nLoaded models: ' + (j.models.filter(function (m) { return m.loaded; }).map(function (m) {
          return '\n  ' + m.name + ' (' + Math.round(m.mem_mb) + ' MiB)'; }).join('') || 'none') : ''), 8000);
    }).catch(function () {
      state.fails++;
      setBadge(state.fails >= 3 ? 'offline' : 'reconnecting');
      if (report) toast('The server does not answer');
    });
  }
  function fmtDur(s) { s = Math.round(s); return s < 60 ? s + ' s' : s < 3600 ? Math.floor(s / 60) + ' min ' + (s % 60) + ' s' : Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min'; }
  function gauge(used, max) {
    used = +used || 0; max = +max || state.ctxMax || 0; state.ctxUsed = used;
    var extra = pendingTokens(), all = used + extra;
    var pct = max ? Math.min(100, Math.round(all * 100 / max)) : 0, g = $('#gauge');
    $('#gauge-bar').style.width = pct + '%';
    $('#gauge-text').textContent = max ? used.toLocaleString() + (extra ? ' + ' + extra.toLocaleString() + ' attached' : '') +
      ' / ' + max.toLocaleString() + ' tokens' : 'context 0%';
    g.setAttribute('aria-valuenow', pct);
    g.classList.toggle('warn', pct >= 75 && pct < 95); g.classList.toggle('full', pct >= 95);
  }
  function gaugeFrom(el) { if (el && el.dataset && el.dataset.ctxUsed !== undefined) gauge(el.dataset.ctxUsed, el.dataset.ctxMax); }

  function scrollDown(force) {
    var c = $('#chat'); if (force || c.scrollHeight - c.scrollTop - c.clientHeight < 160) c.scrollTop = c.scrollHeight;
  }
  function streamingNow() {
    var on = !!$('#messages .msg.streaming');
    document.body.classList.toggle('is-streaming', on);
    if (!on && state.queued) { /* the queued message goes now (after the answer's last save) */
      state.queued = false; document.body.classList.remove('queued');
      setTimeout(submit, 300);
    }
  }

  /* ---- settings, help ---- */
  function openSettings() {
    $('#theme-select').value = get('theme', 'auto');
    $('#thinking-2').checked = $('#thinking').checked;
    var t = $('#temperature').value; $('#temp-range').value = t || 0.6; $('#temp-out').textContent = t || 'default';
    outputs();
    $('#settings').showModal();
  }
  var KEYS = [['Enter', 'Send (while an answer streams: queue it)'], ['Shift+Enter', 'New line'],
    ['Esc', 'Stop the answer; close the command list'], ['↑ in an empty box', 'Edit your last message'],
    ['Ctrl/⌘+K', 'Search conversations'], ['Ctrl/⌘+Shift+O', 'New chat'], ['?', 'This list (outside the text box)']];
  function openHelp() {
    var dl = $('#help-list'), html = '';
    CMDS.forEach(function (c) { html += '<dt>/' + c.name + (c.arg ? ' ' + c.arg : '') + '</dt><dd>' + c.desc + '</dd>'; });
    KEYS.forEach(function (k) { html += '<dt>' + k[0] + '</dt><dd>' + k[1] + '</dd>'; });
    dl.innerHTML = html;
    var d = $('#help'); d.showModal();
    /* showModal focuses the first control, the Close button at the end, and
     * scrolls there: start at the top, with the title in view */
    $('#help-title').focus(); d.scrollTop = 0; dl.scrollTop = 0;
  }

  function demo() {
    var m = document.getElementById('messages');
    m.replaceWith(document.getElementById('demo').content.cloneNode(true));
    $('#conv-list').innerHTML = document.getElementById('demo-convs').innerHTML;
    document.querySelectorAll('#messages .think').forEach(function (t) { t.classList.add('has-text'); });
    setBadge('ready'); state.status = 'ready'; state.ctxMax = 8192; gaugeFrom(document.getElementById('messages'));
    enhance(document.getElementById('messages'));
    if (/palette/.test(location.search)) { input.value = '/'; input.focus(); input.setSelectionRange(1, 1); renderPalette(); }
    if (/nomodel/.test(location.search)) { document.getElementById('messages').innerHTML = ''; setBadge('no_model'); }
    if (/drawer/.test(location.search)) document.body.classList.add('drawer-open');
    streamingNow();
  }

  function init() {
    input = $('#input'); palette = $('#palette');

    input.addEventListener('keydown', onKey);
    input.addEventListener('input', function () { autosize(); renderPalette(); });
    input.addEventListener('click', renderPalette);
    input.addEventListener('blur', function () { setTimeout(closePalette, 150); });
    palette.addEventListener('mousedown', function (e) { e.preventDefault(); }); /* keep focus in the text box */
    palette.addEventListener('click', function (e) {
      var o = e.target.closest('[role="option"]'); if (o) choose(pal.items[+o.dataset.i]);
    });
    palette.addEventListener('mousemove', function (e) {
      var o = e.target.closest('[role="option"]'); if (o && +o.dataset.i !== pal.active) { pal.active = +o.dataset.i; markActive(); }
    });
    $('#thinking').addEventListener('change', function () { setThinking(this.checked); });
    $('#thinking-2').addEventListener('change', function () { setThinking(this.checked); });
    $('#temp-range').addEventListener('input', function () { setTemp(this.value); });
    ['#top-p', '#min-p'].forEach(function (id) { $(id).addEventListener('input', outputs); });
    EXTRA.forEach(function (f) { $(f[1]).addEventListener('input', extraSave); });
    outputs();
    $('#save-defaults').addEventListener('click', function () {
      var v = formValues(); delete v.system; set('defaults', JSON.stringify(v)); toast('New chats start with these settings');
    });
    $('#theme-select').addEventListener('change', function () { setTheme(this.value); });
    $('#file-input').addEventListener('change', function () { attachFiles(this.files); this.value = ''; });
    $('#import-file').addEventListener('change', function () { var f = this.files[0]; this.value = ''; if (f) importFile(f); });
    input.addEventListener('paste', function (e) {
      var f = e.clipboardData && e.clipboardData.files;
      if (f && f.length) { e.preventDefault(); attachFiles(f); }
    });
    var main = $('.main');
    main.addEventListener('dragover', function (e) {
      if (e.dataTransfer && [].indexOf.call(e.dataTransfer.types || [], 'Files') >= 0) { e.preventDefault(); main.classList.add('dropping'); }
    });
    main.addEventListener('dragleave', function (e) { if (!main.contains(e.relatedTarget)) main.classList.remove('dropping'); });
    main.addEventListener('drop', function (e) {
      main.classList.remove('dropping');
      if (e.dataTransfer && e.dataTransfer.files.length) { e.preventDefault(); attachFiles(e.dataTransfer.files); input.focus(); }
    });

    document.addEventListener('click', function (e) {
      var b = e.target.closest('[data-copy]');
      if (b) {
        var src = b.dataset.copy === 'code' ? b.closest('.code') && $('pre code', b.closest('.code'))
          : b.closest('.msg') && ($('.md', b.closest('.msg')) || $('.text', b.closest('.msg')));
        if (src) copyText(sourceText(src).replace(/\n$/, ''), b);
        return;
      }
      var c = e.target.closest('[data-cmd]'); if (c) { run(c.dataset.cmd, ''); return; }
      var un = e.target.closest('[data-unattach]');
      if (un) { attached.splice(+un.dataset.unattach, 1); renderAttached(); input.focus(); return; }
      var sw = e.target.closest('[data-switch]');
      if (sw) { /* another version of this message: its branch is shown and goes on */
        if (document.body.classList.contains('is-streaming')) { toast('An answer is still being generated: stop it first.'); return; }
        post('/ui/c/{conv}/switch/' + encodeURIComponent(sw.closest('.msg').dataset.msg) + '?dir=' + sw.dataset.switch, '#messages', 'outerHTML');
        return;
      }
      var a = e.target.closest('[data-action]'); if (!a) return;
      switch (a.dataset.action) {
        case 'theme': setTheme('toggle'); break;
        case 'settings': openSettings(); break;
        case 'attach': $('#file-input').click(); break;
        case 'import': $('#import-file').click(); break;
        case 'edit': startEdit(a.closest('.msg')); break;
        case 'rename': startRename(a.closest('.conv')); break;
        case 'open-sidebar': document.body.classList.add('drawer-open'); a.setAttribute('aria-expanded', 'true'); $('#conv-search').focus(); break;
        case 'close-sidebar': document.body.classList.remove('drawer-open'); $('[data-action="open-sidebar"]').setAttribute('aria-expanded', 'false'); break;
      }
    });
    /* keys of the whole page (listed by /help and ?) */
    document.addEventListener('keydown', function (e) {
      var mod = e.ctrlKey || e.metaKey, k = e.key.toLowerCase();
      if (e.key === 'Escape' && document.body.classList.contains('drawer-open')) { document.body.classList.remove('drawer-open'); return; }
      if (e.key === 'Escape' && !e.defaultPrevented && !document.querySelector('dialog[open]') &&
          document.body.classList.contains('is-streaming')) { e.preventDefault(); $('#stop').click(); return; }
      if (mod && !e.shiftKey && k === 'k') {
        e.preventDefault();
        if (getComputedStyle($('[data-action="open-sidebar"]')).display !== 'none') document.body.classList.add('drawer-open');
        $('#conv-search').focus(); return;
      }
      if (mod && e.shiftKey && k === 'o') { e.preventDefault(); $('#new-chat').click(); input.focus(); return; }
      var t = e.target, typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
      if (e.key === '?' && !typing && !mod && !document.querySelector('dialog[open]')) { e.preventDefault(); openHelp(); }
    });

    /* htmx glue */
    document.body.addEventListener('htmx:configRequest', function (e) {
      if (e.detail.path.indexOf('{conv}') >= 0) e.detail.path = e.detail.path.replace('{conv}', encodeURIComponent(convId()));
      if (e.detail.elt && e.detail.elt.id === 'composer' && attached.length) { /* the files go first, then the text */
        e.detail.parameters.text = attached.map(function (a) { return a.block; }).join('\n\n') +
          (input.value.trim() ? '\n\n' + input.value : '');
      }
      if (e.detail.path === '/ui/conversations' && e.detail.verb === 'post') { /* a new chat starts with the defaults */
        var d = defaults(); Object.keys(d).forEach(function (k) { e.detail.parameters[k] = d[k]; });
      }
    });
    /* /clear: the old conversation stays until the undo time is over */
    var cleared = null;
    document.body.addEventListener('smolbot:cleared', function (e) { cleared = e.detail && e.detail.value; });
    function offerUndo(old, neu) {
      toast('Conversation cleared.', 8000, {
        label: 'Undo',
        fn: function () {
          htmx.ajax('GET', '/ui/c/' + encodeURIComponent(old), { target: '#messages', swap: 'outerHTML' }).then(function () {
            htmx.ajax('DELETE', '/ui/c/' + encodeURIComponent(neu), { swap: 'none' });
          });
        },
        expire: function () { htmx.ajax('DELETE', '/ui/c/' + encodeURIComponent(old), { swap: 'none' }); }
      });
    }
    document.body.addEventListener('htmx:afterRequest', function (e) {
      if (e.detail.elt && e.detail.elt.id === 'composer' && e.detail.successful) { input.value = ''; autosize(); attached = []; renderAttached(); }
      if (e.detail.failed && e.detail.xhr) {
        var x = e.detail.xhr;
        if (x.status === 401) { location.href = '/'; return; }
        if (x.status === 404 && /\/ui\/c\/[^/]+$/.test(e.detail.pathInfo.requestPath)) { set('conv', 'latest'); htmx.ajax('GET', '/ui/c/latest', { target: '#messages', swap: 'outerHTML' }); }
        else toast(x.status ? (x.responseText || 'Error ' + x.status).slice(0, 300) : 'The server does not answer');
      }
    });
    document.body.addEventListener('htmx:sendError', function () { toast('The server does not answer'); });
    document.body.addEventListener('htmx:afterSwap', function (e) {
      var m = document.getElementById('messages');
      if (m && m.dataset.conv) {
        set('conv', m.dataset.conv);
        document.querySelectorAll('.conv').forEach(function (li) { li.classList.toggle('current', li.dataset.conv === m.dataset.conv); });
      }
      var tg = e.detail.target;
      enhance(tg && tg.id === 'messages' ? m : tg);
      if (tg && tg.id === 'messages') gaugeFrom(m);
      if (tg && tg.id === 'messages' && tg !== m) { /* replaced (outerHTML: tg is the old node), not appended to */
        settingsFrom(m);
        if (m.dataset.model && pickerHas(m.dataset.model)) pickModel(m.dataset.model); /* the conversation keeps its model */
        if (cleared && m.dataset.conv !== cleared) { offerUndo(cleared, m.dataset.conv); }
        cleared = null;
      }
      else if (tg && tg.querySelector) gaugeFrom(tg.querySelector('[data-ctx-used]'));
      document.body.classList.remove('drawer-open');
      streamingNow(); scrollDown(e.detail.target && (e.detail.target.id === 'messages'));
    });
    document.body.addEventListener('htmx:sseMessage', function (e) {
      var art = e.target.closest && e.target.closest('.msg'), type = e.detail && e.detail.type;
      if (!art) return;
      if (type === 'think') { var t = $('.think', art); if (t) t.classList.add('has-text'); }
      if (type === 'thought') { var d = $('.think', art); if (d) d.open = false; }
      if (type === 'stats') gaugeFrom($('[data-ctx-used]', art));
      if (type === 'block') enhance($('.md', art));
      if (type === 'tail') enhance($('.tail', art), true);
      if (type === 'loading') { /* the picker says which model loads, then that it is loaded */
        var ld = $('.loading', art), on = !!(ld && ld.textContent), was = art.classList.contains('model-loading');
        art.classList.toggle('model-loading', on);
        if (on !== was || !on) pollStatus(false);
      }
      scrollDown();
    });
    document.body.addEventListener('htmx:sseClose', function (e) {
      var art = e.target.closest && e.target.closest('.msg'); if (!art) return;
      art.classList.remove('streaming'); art.removeAttribute('sse-connect');
      var d = $('.think', art); if (d) d.open = false;
      streamingNow();
    });
    document.body.addEventListener('htmx:sseError', function (e) {
      if (e.detail && e.detail.error && e.detail.error.data !== undefined) return; /* an "error" event: the answer's, not the connection's */
      if (state.status === 'ready') setBadge('reconnecting');
    });
    document.body.addEventListener('htmx:sseOpen', function () { if (state.status === 'ready') setBadge('ready'); });

    if (/[?&]demo/.test(location.search) || !window.htmx) { demo(); return; }
    pollStatus(false); setInterval(pollStatus, 5000, false);
    /* #messages loads itself (hx-trigger=load) once htmx initialises, after this */
    input.focus();
  }
})();
