// The ccma serve page: text search over the gallery, and a run's test queries worst first.
// State lives in the URL (?q=...&k=... or ?view=failures&words=...), so a view can be shared.
'use strict';

const $ = (id) => document.getElementById(id);
const PAGE = 50;
let info = null;
let searchSeq = 0;
let failureOffset = 0;

/** An element with attributes and children (strings become text, never markup). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

async function getJSON(url) {
  const r = await fetch(url);
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function setStatus(id, text, error) {
  $(id).textContent = text;
  $(id).classList.toggle('error', !!error);
}

function baseName(path) {
  return path.split(/[\\/]/).pop();
}

function showImage(src, caption) {
  $('viewer-img').src = src;
  $('viewer-caption').textContent = caption;
  $('viewer').hidden = false;
}

function ready() {
  document.body.dataset.state = 'ready';
}

async function runSearch(q, k) {
  const seq = ++searchSeq;
  document.body.dataset.state = 'loading';
  setStatus('status', 'searching...');
  try {
    const res = await getJSON('/api/search?' + new URLSearchParams({ q, k }));
    if (seq !== searchSeq) return;
    const items = res.results.map((r) => {
      const src = `/img/g/${r.index}`;
      const card = el('li', { class: 'result', 'data-rank': r.rank, title: r.image },
        el('img', { src, alt: baseName(r.image), loading: 'lazy' }),
        el('div', { class: 'meta' },
          el('span', { class: 'rank' }, `#${r.rank}`),
          el('span', { class: 'score' }, r.score.toFixed(4))),
        el('div', { class: 'file' }, baseName(r.image)));
      card.addEventListener('click', () =>
        showImage(src, `#${r.rank}  ${r.image}  (score ${r.score.toFixed(4)})`));
      return card;
    });
    $('results').replaceChildren(...items);
    setStatus('status', `top ${items.length} of ${info.gallery.images} images for "${res.query}"`);
  } catch (e) {
    if (seq !== searchSeq) return;
    $('results').replaceChildren();
    setStatus('status', e.message, true);
  }
  ready();
}

function failureItem(q) {
  const first = q.first_match;
  const thumbs = q.top.map((t, i) => {
    const src = `/img/t/${t.index}`;
    const li = el('li', { class: 'thumb' + (t.correct ? ' correct' : ''), title: `rank ${i + 1}, person ${t.pid}` },
      el('img', { src, alt: `rank ${i + 1}`, loading: 'lazy' }),
      el('span', { class: 'score' }, t.score.toFixed(3)));
    li.addEventListener('click', () =>
      showImage(src, `rank ${i + 1} for query ${q.query}: person ${t.pid} (${t.correct ? 'correct' : 'wrong'})`));
    return li;
  });
  return el('li', { class: 'failure', 'data-query': q.query },
    el('div', { class: 'head' },
      el('span', { class: 'first ' + (first === 1 ? 'hit' : 'miss') }, `first correct image at rank ${first}`),
      el('span', { class: 'who' }, `query ${q.query}, person ${q.pid}, ${q.matches} correct image(s) in the gallery`)),
    el('p', { class: 'caption' }, q.caption),
    el('ol', { class: 'top10' }, ...thumbs));
}

async function loadFailures(reset) {
  if (reset) {
    failureOffset = 0;
    $('failures').replaceChildren();
  }
  document.body.dataset.state = 'loading';
  const words = $('words').value;
  try {
    const res = await getJSON('/api/failures?' + new URLSearchParams({ words, offset: failureOffset, limit: PAGE }));
    $('failures').append(...res.queries.map(failureItem));
    failureOffset += res.queries.length;
    const which = words.trim() ? ` whose caption has "${words.trim()}"` : '';
    setStatus('fstatus', `${res.matching} of ${res.total} test queries${which}, worst first (showing ${failureOffset})`);
    $('more').hidden = failureOffset >= res.matching;
  } catch (e) {
    setStatus('fstatus', e.message, true);
  }
  ready();
}

/** Shows the view the URL names. */
function route() {
  const p = new URLSearchParams(location.search);
  const failures = p.get('view') === 'failures' && info.run;
  $('search-view').hidden = !!failures;
  $('failures-view').hidden = !failures;
  $('tab-search').classList.toggle('active', !failures);
  $('tab-failures').classList.toggle('active', !!failures);
  if (failures) {
    $('words').value = p.get('words') || '';
    loadFailures(true);
    return;
  }
  const q = p.get('q') || '';
  $('q').value = q;
  $('k').value = p.get('k') || 10;
  if (q.trim()) runSearch(q, $('k').value);
  else ready();
}

function go(params) {
  history.pushState(null, '', '/?' + new URLSearchParams(params));
  route();
}

$('search-form').addEventListener('submit', (e) => {
  e.preventDefault();
  go({ q: $('q').value, k: $('k').value });
});
$('filter-form').addEventListener('submit', (e) => {
  e.preventDefault();
  go({ view: 'failures', words: $('words').value });
});
$('more').addEventListener('click', () => loadFailures(false));
$('viewer').addEventListener('click', () => { $('viewer').hidden = true; });
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('viewer').hidden = true; });
window.addEventListener('popstate', route);

(async () => {
  try {
    info = await getJSON('/api/info');
  } catch (e) {
    setStatus('status', `cannot reach the server: ${e.message}`, true);
    ready();
    return;
  }
  const parts = [`${info.gallery.images} images in ${info.gallery.source}`];
  if (info.run) {
    const m = info.run.t2i;
    parts.push(`${info.run.dataset} test: R@1 ${m.R1.toFixed(2)}, R@5 ${m.R5.toFixed(2)}, mAP ${m.mAP.toFixed(2)} over ${info.run.queries} queries`);
    $('tab-failures').hidden = false;
  }
  $('info').textContent = parts.join(' · ');
  route();
})();
