// Flamenco Manager dashboard: polls the JSON status API (/api/status, /api/status/workers,
// /api/status/jobs) every 2 s (10 s after an error) and updates the page in place; sends
// worker and job actions with the admin token when the Manager asks for one.
// Plain JavaScript, no framework, no build step. See docs/dashboard.md.
'use strict';

(() => {
  const POLL_OK_MS = 2000;
  const POLL_ERROR_MS = 10000;
  const IMAGE_FALLBACK_MS = 15000;
  const TOKEN_KEY = 'flamenco-admin-token';
  const UNREACHABLE = 'Unable to get the status report. Is the Manager still running & reachable?';

  const TASK_CLASSES = {
    queued: 'st-info', 'claimed-by-manager': 'st-info', active: 'st-run', completed: 'st-ok',
    failed: 'st-bad', 'soft-failed': 'st-warn', canceled: 'st-idle', 'cancel-requested': 'st-warn',
  };
  const JOB_CLASSES = TASK_CLASSES;
  const WORKER_CLASSES = {
    awake: 'st-ok', asleep: 'st-info', down: 'st-idle', timeout: 'st-bad',
    shutdown: 'st-idle', registered: 'st-idle', '': 'st-idle',
  };
  const ROW_CLASSES = { 'st-ok': 'row-ok', 'st-bad': 'row-bad', 'st-warn': 'row-warn', 'st-info': 'row-info' };
  const TASK_ORDER = ['queued', 'claimed-by-manager', 'active', 'completed', 'failed', 'soft-failed',
    'cancel-requested', 'canceled'];
  const WORKER_ORDER = ['awake', 'asleep', 'registered', 'down', 'shutdown', 'timeout'];
  const DEFAULT_ORDER = { nickname: 'asc', status: 'asc', platform: 'asc', software: 'asc', last_activity: 'desc' };

  const state = {
    mode: document.body.dataset.mode === 'upstream' ? 'upstream' : 'standalone',
    workers: { sort: 'nickname', order: 'asc', offset: 0, limit: 25, total: 0 },
    old: { sort: 'last_activity', order: 'desc', offset: 0, limit: 25, total: 0 },
    jobs: { offset: 0, limit: 20, hasMore: false },
    skewMs: 0,
    timer: null,
    pollSeq: 0,
    pendingAction: null,
    imageTimer: null,
    // Multi-select: the ids of the checked rows (only rows shown on the page stay selected).
    selected: { jobs: new Set(), workers: new Set() },
  };

  const $ = (selector, root = document) => root.querySelector(selector);

  /** Build an element: el('td', {class: 'x', title: 'y'}, child, 'text', …). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (value === true) node.setAttribute(key, '');
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ------------------------------------------------------------------ time

  function serverNow() {
    return Date.now() + state.skewMs;
  }

  /** v2's relative times: just now, N seconds/minutes/hours ago, else a date. */
  function ago(iso) {
    if (!iso) return 'never';
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return String(iso);
    const seconds = Math.floor((serverNow() - t) / 1000);
    if (seconds < 1) return 'just now';
    if (seconds < 60) return seconds === 1 ? '1 second ago' : `${seconds} seconds ago`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes === 1 ? '1 minute ago' : `${minutes} minutes ago`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours === 1 ? '1 hour ago' : `${hours} hours ago`;
    return new Date(t).toLocaleDateString('en-GB', { day: 'numeric', month: 'short', year: 'numeric' });
  }

  function fullDate(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    return new Date(t).toLocaleString('en-GB', { dateStyle: 'full', timeStyle: 'long' });
  }

  /** A <time> that keeps its relative text up to date (see refreshTimes). */
  function timeEl(iso) {
    if (!iso) return el('span', { class: 'never', text: 'never' });
    return el('time', { datetime: iso, 'data-ts': iso, title: fullDate(iso), text: ago(iso) });
  }

  function refreshTimes() {
    for (const node of document.querySelectorAll('time[data-ts]')) {
      const text = ago(node.dataset.ts);
      if (node.textContent !== text) node.textContent = text;
    }
  }

  // ------------------------------------------------------------------ HTTP

  class RequestError extends Error {}

  async function errorText(resp) {
    let text = '';
    try {
      text = await resp.text();
    } catch (_) {
      return resp.statusText;
    }
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === 'string') return body.error;
    } catch (_) {
      // not JSON: use the text
    }
    return text.trim() || resp.statusText;
  }

  async function getJSON(url) {
    let resp;
    try {
      resp = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    } catch (_) {
      throw new RequestError(UNREACHABLE);
    }
    if (!resp.ok) throw new RequestError(`Error ${resp.status}: ${await errorText(resp)}`);
    try {
      return await resp.json();
    } catch (_) {
      throw new RequestError(`Error ${resp.status}: the answer is not valid JSON`);
    }
  }

  function workersUrl(view, group) {
    const q = new URLSearchParams({
      group, sort: view.sort, order: view.order, offset: view.offset, limit: view.limit,
    });
    return `/api/status/workers?${q}`;
  }

  function jobsUrl() {
    const q = new URLSearchParams({ offset: state.jobs.offset, limit: state.jobs.limit });
    return `/api/status/jobs?${q}`;
  }

  // ------------------------------------------------------------------ polling

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, ms);
  }

  async function poll() {
    clearTimeout(state.timer);
    const seq = ++state.pollSeq;
    try {
      const requests = [
        getJSON('/api/status'),
        getJSON(workersUrl(state.workers, 'current')),
        getJSON(workersUrl(state.old, 'old')),
      ];
      if (state.mode === 'standalone') requests.push(getJSON(jobsUrl()));
      const [status, current, old, jobs] = await Promise.all(requests);
      if (seq !== state.pollSeq) return; // a newer poll started meanwhile
      const now = Date.parse(status.now);
      if (!Number.isNaN(now)) state.skewMs = now - Date.now();
      renderStatus(status);
      renderWorkers(current, old);
      if (jobs) renderJobs(jobs);
      refreshTimes();
      const refreshed = $('#last-refresh');
      const stamp = new Date();
      refreshed.textContent = stamp.toLocaleTimeString('en-GB');
      refreshed.setAttribute('datetime', stamp.toISOString());
      hideError();
      if (pageBeyondEnd()) {
        poll();
        return;
      }
      schedule(POLL_OK_MS);
    } catch (e) {
      if (seq !== state.pollSeq) return;
      showError(e instanceof RequestError ? e.message : `${UNREACHABLE} (${e})`);
      schedule(POLL_ERROR_MS);
    }
  }

  /** After workers vanished, a page past the end is empty: go back to the last page. */
  function pageBeyondEnd() {
    let moved = false;
    for (const view of [state.workers, state.old]) {
      if (view.offset > 0 && view.offset >= view.total) {
        view.offset = Math.max(0, Math.floor((view.total - 1) / view.limit) * view.limit);
        moved = true;
      }
    }
    return moved;
  }

  function showError(message) {
    const banner = $('#error-banner');
    banner.textContent = message;
    banner.hidden = false;
  }

  function hideError() {
    const banner = $('#error-banner');
    banner.hidden = true;
    banner.textContent = '';
  }

  // ------------------------------------------------------------------ rendering: overview

  function setText(selector, text, title) {
    const node = $(selector);
    if (!node) return;
    if (node.textContent !== String(text)) node.textContent = String(text);
    if (title !== undefined) node.title = title;
  }

  /** The entries of `counts` with the statuses of `order` first, in that order. */
  function ordered(counts, order) {
    const rank = (status) => {
      const i = order.indexOf(status);
      return i === -1 ? order.length : i;
    };
    return Object.entries(counts || {}).sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
  }

  /** Keep one <li data-status> per status in `list`, in the given order. */
  function renderCounts(list, counts, classes) {
    const seen = new Set();
    let index = 0;
    for (const [status, n] of counts) {
      seen.add(status);
      let item = list.querySelector(`li[data-status="${CSS.escape(status)}"]`);
      if (!item) {
        item = el('li', { 'data-status': status },
          el('span', { class: 'count', text: '0' }),
          el('span', { class: 'label', text: status, title: status }));
      }
      item.className = `${classes[status] || 'st-idle'}${n === 0 ? ' is-zero' : ''}`;
      const count = item.querySelector('.count');
      if (count.textContent !== String(n)) count.textContent = String(n);
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
      index += 1;
    }
    for (const item of [...list.children]) {
      if (!seen.has(item.dataset.status)) item.remove();
    }
  }

  /** "leader: <holder>", marked when it is the Manager serving this page. */
  function renderLeader(l) {
    if (!l) return;
    const holder = l.holder ? l.holder + (l.leading ? ' (this Manager)' : '') : 'none';
    setText('#fm-leader', holder, 'this page is served by ' + l.instance);
  }

  function renderStatus(s) {
    setText('#fm-version', s.version);
    setText('#fm-mode', s.mode);
    setText('#fm-store', s.store, s.store);
    renderLeader(s.leader);
    setText('#fm-server', s.server || '–', s.server || '');
    renderCounts($('#task-counts'), ordered(s.tasks, TASK_ORDER), TASK_CLASSES);
    setText('#tasks-total', s.tasks_total);
    const byStatus = ordered(s.workers && s.workers.by_status, WORKER_ORDER);
    renderCounts($('#worker-counts'), byStatus, WORKER_CLASSES);
    setText('#workers-total', s.workers ? s.workers.total : 0);
    if (state.mode === 'upstream' && $('#upstream-link')) renderUpstream(s.upstream, s.outbox || {});
  }

  function renderUpstream(up, outbox) {
    const pill = $('#upstream-state');
    if (!up) {
      pill.textContent = 'not connected';
      pill.className = 'pill badge st-bad';
      setText('#up-last-error', 'the upstream connection is not configured correctly; see the Manager log');
      return;
    }
    const failing = up.consecutive_push_failures > 0 || up.consecutive_download_failures > 0;
    if (failing) {
      pill.textContent = 'failing';
      pill.className = 'pill badge st-bad';
    } else if (up.last_success) {
      pill.textContent = 'connected';
      pill.className = 'pill badge st-ok';
    } else {
      pill.textContent = 'connecting';
      pill.className = 'pill badge st-warn';
    }
    setText('#up-server', up.server, up.server);
    for (const [selector, value] of [
      ['#up-last-success', up.last_success],
      ['#up-last-push', up.last_push],
      ['#up-last-download', up.last_download],
    ]) {
      const node = $(selector);
      const current = node.querySelector('time');
      if (!current || current.dataset.ts !== value) node.replaceChildren(timeEl(value));
    }
    setText('#up-backlog', outbox.depth !== undefined ? outbox.depth : up.backlog);
    setText('#up-set-aside', outbox.set_aside !== undefined ? outbox.set_aside : up.set_aside);
    setText('#up-failures',
      `${up.consecutive_push_failures} push, ${up.consecutive_download_failures} download in a row`);
    const errorNode = $('#up-last-error');
    if (up.last_error) {
      const e = up.last_error;
      const key = `${e.at}|${e.call}|${e.message}`;
      if (errorNode.dataset.key !== key) {
        errorNode.dataset.key = key;
        errorNode.replaceChildren(`${e.call} failed `, timeEl(e.at), `: ${e.message}`);
      }
      errorNode.classList.toggle('has-error', failing);
    } else {
      errorNode.dataset.key = '';
      setText('#up-last-error', 'none');
      errorNode.classList.remove('has-error');
    }
  }

  // ------------------------------------------------------------------ rendering: workers

  function shortId(id, n) {
    return `…${String(id).slice(-n)}`;
  }

  function shownSoftware(software) {
    if (!software) return 'unknown';
    return software.replace(/^Flamenco-Worker\//, '');
  }

  const ACTIONS = [
    ['sleep', 'Sleep', 'Ask the worker to go to sleep: it stops taking tasks'],
    ['wake', 'Wake', 'Ask the worker to wake up and take tasks again'],
    ['shutdown', 'Shut down', 'Ask the worker to sign off and exit'],
  ];

  /**
   * Why `action` makes no sense for worker `w` right now, or '' when it does. The Manager
   * records any request; this only keeps the buttons to the ones that change something.
   */
  function actionBlocked(action, w) {
    const status = w.status || 'registered';
    const requested = w.status_requested || '';
    if (status === 'registered') return 'The worker never signed on; it cannot be asked anything yet';
    if (status === 'down' || status === 'shutdown') {
      return `The worker is ${status}: it is not running and cannot obey a request`;
    }
    if (requested === 'shutdown') return 'The worker was already asked to shut down';
    const now = status === 'timeout' ? 'timed out' : `is ${status}`;
    switch (action) {
      case 'sleep':
        if (requested === 'asleep') return 'The worker was already asked to sleep';
        if (status === 'asleep' && requested !== 'awake') return 'The worker is already asleep';
        return '';
      case 'wake':
        if (requested === 'asleep') return '';
        if (requested === 'awake') return 'The worker was already asked to wake up';
        if (status === 'asleep') return '';
        return `The worker ${now}, not asleep`;
      case 'shutdown':
        if (status === 'awake' || status === 'asleep') return '';
        return `The worker ${now}; only an awake or asleep worker can be shut down`;
      default:
        return '';
    }
  }

  function workerRow(w) {
    const status = w.status || 'registered';
    const cls = WORKER_CLASSES[w.status] || 'st-idle';
    const title = `id ${w.id}${w.address ? `, address ${w.address}` : ''}`;
    const task = w.current_task
      ? el('span', { class: 'task' },
        el('code', { title: w.current_task, text: shortId(w.current_task, 8) }), ' ',
        w.current_task_status
          ? el('span', { class: `badge ${TASK_CLASSES[w.current_task_status] || 'st-idle'}`, text: w.current_task_status })
          : null,
        w.current_task_updated ? ' ' : null,
        w.current_task_updated ? timeEl(w.current_task_updated) : null)
      : el('span', { class: 'none', text: '–' });
    const unsupported = !w.supports_status_requests;
    const why = `This worker runs ${w.software || 'unknown software'}, which does not support `
      + 'status requests; Flamenco Worker 2.1 or newer is needed';
    const buttons = ACTIONS.map(([action, label, help]) => {
      const blocked = unsupported ? why : actionBlocked(action, w);
      return el('button', {
        type: 'button',
        class: `btn${action === 'shutdown' ? ' btn-danger' : ''}`,
        'data-action': action,
        disabled: Boolean(blocked),
        title: blocked || help,
        text: label,
      });
    });
    const requested = w.status_requested
      ? el('span', { class: `badge badge-requested ${WORKER_CLASSES[w.status_requested] || 'st-idle'}`, text: w.status_requested })
      : null;
    return el('tr', { 'data-worker-id': w.id, class: `${ROW_CLASSES[cls] || 'row-idle'}${state.selected.workers.has(w.id) ? ' is-selected' : ''}` },
      selectCell('workers', w.id, `Select worker ${w.nickname || w.id}`),
      el('td', { class: 'nickname', 'data-label': 'Nickname', title },
        el('a', { href: `#/workers/${encodeURIComponent(w.id)}`, text: w.nickname || '(no nickname)' }),
        el('span', { class: 'sub', text: shortId(w.id, 6) }),
        ...(w.tags || []).map((t) => el('span', { class: 'tag', title: 'Worker tag', text: t }))),
      el('td', { class: 'status', 'data-label': 'Status' },
        el('span', { class: `badge ${cls}`, text: status })),
      el('td', { class: `status-requested${requested ? '' : ' is-empty'}`, 'data-label': 'Requested' }, requested),
      el('td', { class: 'platform', 'data-label': 'Platform', text: w.platform || '–' }),
      el('td', { class: 'software', 'data-label': 'Software', title: w.software || '', text: shownSoftware(w.software) }),
      el('td', { class: `task${w.current_task ? '' : ' is-empty'}`, 'data-label': 'Current task' }, task),
      el('td', { class: 'last-seen', 'data-label': 'Last seen' }, timeEl(w.last_activity)),
      el('td', { class: 'actions-cell', 'data-label': 'Actions' }, el('div', { class: 'actions' }, ...buttons)));
  }

  /** Update rows keyed by `key`, rebuilding only the ones whose data changed. */
  function reconcile(tbody, items, keyAttr, build) {
    const existing = new Map();
    for (const row of tbody.children) existing.set(row.getAttribute(keyAttr), row);
    const keep = new Set();
    items.forEach((item, index) => {
      const key = item.id;
      const signature = JSON.stringify(item);
      keep.add(key);
      let row = existing.get(key);
      if (!row || row.dataset.signature !== signature) {
        const fresh = build(item);
        fresh.dataset.signature = signature;
        if (row) row.replaceWith(fresh);
        row = fresh;
      }
      if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
    });
    for (const [key, row] of existing) {
      if (!keep.has(key)) row.remove();
    }
  }

  function renderPager(nav, view, total, onChange) {
    if (total <= view.limit && view.offset === 0) {
      nav.hidden = true;
      nav.replaceChildren();
      return;
    }
    nav.hidden = false;
    const first = total === 0 ? 0 : view.offset + 1;
    const last = Math.min(view.offset + view.limit, total);
    const prev = el('button', { type: 'button', class: 'btn', 'data-page': 'prev', disabled: view.offset === 0, text: '← Previous' });
    const next = el('button', { type: 'button', class: 'btn', 'data-page': 'next', disabled: last >= total, text: 'Next →' });
    prev.addEventListener('click', () => onChange(Math.max(0, view.offset - view.limit)));
    next.addEventListener('click', () => onChange(view.offset + view.limit));
    nav.replaceChildren(prev, el('span', { class: 'page-info', text: `${first}–${last} of ${total}` }), next);
  }

  function renderWorkers(current, old) {
    state.workers.total = current.total;
    state.old.total = old.total;
    reconcile($('#workers-table tbody'), current.workers, 'data-worker-id', workerRow);
    reconcile($('#old-workers-table tbody'), old.workers, 'data-worker-id', workerRow);
    syncSelection('workers');
    const empty = $('#workers-empty');
    empty.hidden = current.total > 0;
    empty.textContent = old.total > 0
      ? 'No worker is connected right now; the ones seen before are listed below.'
      : 'No workers have registered yet.';
    $('#workers-table').closest('.table-wrap').hidden = current.total === 0;
    setText('#workers-current-count', current.total ? `(${current.total})` : '');
    setText('#old-workers-count', old.total);
    $('#old-workers').hidden = old.total === 0;
    renderPager($('#workers-pager'), state.workers, current.total, (offset) => {
      state.workers.offset = offset;
      poll();
    });
    renderPager($('#old-workers-pager'), state.old, old.total, (offset) => {
      state.old.offset = offset;
      poll();
    });
  }

  function sortWorkers(key, order) {
    const view = state.workers;
    if (order) {
      view.order = order;
    } else if (view.sort === key) {
      view.order = view.order === 'asc' ? 'desc' : 'asc';
    } else {
      view.order = DEFAULT_ORDER[key] || 'asc';
    }
    view.sort = key;
    view.offset = 0;
    for (const th of document.querySelectorAll('#workers-table th')) {
      const button = th.querySelector('button.sort');
      if (button && button.dataset.sort === key) {
        th.setAttribute('aria-sort', view.order === 'asc' ? 'ascending' : 'descending');
      } else {
        th.removeAttribute('aria-sort');
      }
    }
    const select = $('#workers-sort');
    const value = `${key}:${view.order}`;
    if (![...select.options].some((o) => o.value === value)) {
      select.append(el('option', { value, text: `${key.replace('_', ' ')} (${view.order})` }));
    }
    select.value = value;
    poll();
  }

  // ------------------------------------------------------------------ rendering: jobs

  const FINAL_JOB_STATUSES = new Set(['completed', 'failed', 'canceled']);

  function jobRow(job) {
    const t = job.tasks || {};
    const total = t.total || 0;
    const done = t.completed || 0;
    const extra = [];
    if (t.active) extra.push(`${t.active} active`);
    if (t.failed) extra.push(`${t.failed} failed`);
    if (t['soft-failed']) extra.push(`${t['soft-failed']} soft-failed`);
    if (t.canceled) extra.push(`${t.canceled} canceled`);
    const failures = (t.failed || 0) + (t['soft-failed'] || 0) > 0;
    const percent = total ? Math.floor((100 * done) / total) : 0;
    const bar = el('progress', {
      class: `progress${failures ? ' has-failures' : ''}`,
      max: Math.max(total, 1), value: done, title: `${percent}% done`,
      'aria-label': `${done} of ${total} tasks completed`,
    });
    const cancellable = !FINAL_JOB_STATUSES.has(job.status) && job.status !== 'cancel-requested';
    const requeueable = job.status !== 'cancel-requested';
    return el('tr', { 'data-job-id': job.id, class: state.selected.jobs.has(job.id) ? 'is-selected' : null },
      selectCell('jobs', job.id, `Select job ${job.name || job.id}`),
      el('td', { class: 'job-name', 'data-label': 'Job', title: job.id },
        el('a', { href: `#/jobs/${encodeURIComponent(job.id)}`, text: job.name || '(unnamed)' }),
        el('span', { class: 'sub', text: `${job.job_type} · ${shortId(job.id, 6)}` })),
      el('td', { 'data-label': 'Status' },
        el('span', { class: `job-status badge ${JOB_CLASSES[job.status] || 'st-idle'}`, text: job.status })),
      el('td', { class: 'progress-td', 'data-label': 'Progress' },
        el('div', { class: 'progress-cell' }, bar,
          el('span', { class: 'progress-text', text: `${done} of ${total} done${extra.length ? ` · ${extra.join(' · ')}` : ''}` }))),
      el('td', { class: 'priority', 'data-label': 'Priority', text: job.priority }),
      el('td', { class: 'updated', 'data-label': 'Updated' }, timeEl(job.updated)),
      el('td', { class: 'actions-cell', 'data-label': 'Actions' },
        el('div', { class: 'actions' },
          el('button', {
            type: 'button', class: 'btn btn-danger', 'data-action': 'cancel', disabled: !cancellable,
            title: cancellable ? 'Cancel the job: queued tasks are canceled, running ones stopped' : `The job is ${job.status}`,
            text: 'Cancel',
          }),
          el('button', {
            type: 'button', class: 'btn', 'data-action': 'requeue', disabled: !requeueable,
            title: requeueable ? 'Re-queue the job: its unfinished and failed tasks run again' : 'Wait until the cancel finished',
            text: 'Re-queue',
          }))));
  }

  function renderJobs(page) {
    state.jobs.hasMore = Boolean(page.has_more);
    reconcile($('#jobs-table tbody'), page.jobs || [], 'data-job-id', jobRow);
    syncSelection('jobs');
    $('#jobs-empty').hidden = (page.jobs || []).length > 0 || state.jobs.offset > 0;
    $('#jobs-table').closest('.table-wrap').hidden = (page.jobs || []).length === 0 && state.jobs.offset === 0;
    const nav = $('#jobs-pager');
    const view = state.jobs;
    if (view.offset === 0 && !view.hasMore) {
      nav.hidden = true;
      nav.replaceChildren();
      return;
    }
    nav.hidden = false;
    const count = (page.jobs || []).length;
    const prev = el('button', { type: 'button', class: 'btn', 'data-page': 'prev', disabled: view.offset === 0, text: '← Newer' });
    const next = el('button', { type: 'button', class: 'btn', 'data-page': 'next', disabled: !view.hasMore, text: 'Older →' });
    prev.addEventListener('click', () => { view.offset = Math.max(0, view.offset - view.limit); poll(); });
    next.addEventListener('click', () => { view.offset += view.limit; poll(); });
    const info = count ? `${view.offset + 1}–${view.offset + count}` : 'none';
    nav.replaceChildren(prev, el('span', { class: 'page-info', text: `Jobs ${info}` }), next);
  }

  // ------------------------------------------------------------------ actions

  let messageTimer = null;

  function showMessage(text, isError) {
    const node = $('#action-message');
    node.textContent = text;
    node.classList.toggle('is-error', Boolean(isError));
    node.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { node.hidden = true; }, isError ? 15000 : 5000);
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function askToken(retry, rejected) {
    state.pendingAction = retry;
    const form = $('#admin-token-form');
    $('#admin-token-message').textContent = rejected ? 'The Manager did not accept that token; check admin_token in its configuration.' : '';
    form.hidden = false;
    $('#admin-token').focus();
  }

  async function act(url, label, button, body = '{}', onReport = null) {
    const token = storedToken();
    // The Manager refuses state-changing requests that are not declared as JSON (any page
    // can send text/plain cross-site; docs/security.md), so actions say application/json.
    const headers = { Accept: 'application/json', 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (button) button.classList.add('busy');
    let resp;
    try {
      resp = await fetch(url, { method: 'POST', headers, body });
    } catch (_) {
      showMessage(`${label}: the Manager could not be reached. Is it still running?`, true);
      return;
    } finally {
      if (button) button.classList.remove('busy');
    }
    if (resp.status === 401) {
      if (token) {
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
      }
      askToken(() => act(url, label, button, body, onReport), Boolean(token));
      return;
    }
    if (!resp.ok) {
      showMessage(`${label} refused (${resp.status}): ${await errorText(resp)}`, true);
      return;
    }
    $('#admin-token-form').hidden = true;
    if (onReport) {
      let report = null;
      try { report = await resp.json(); } catch (_) { /* not JSON */ }
      onReport(report);
    } else {
      showMessage(`${label}: done.`, false);
    }
    poll();
    refreshDetail();
  }

  function onActionClick(event) {
    const button = event.target.closest('button[data-action]');
    if (!button || button.disabled) return;
    const action = button.dataset.action;
    const workerRowEl = button.closest('tr[data-worker-id]');
    const jobRowEl = button.closest('[data-job-id]');
    if (workerRowEl && ['sleep', 'wake', 'shutdown'].includes(action)) {
      const id = workerRowEl.dataset.workerId;
      const name = workerRowEl.querySelector('td.nickname').firstChild.textContent;
      const what = { sleep: 'Sleep', wake: 'Wake', shutdown: 'Shut down' }[action];
      act(`/api/workers/${encodeURIComponent(id)}/${action}`, `${what} worker ${name}`, button);
    } else if (button.closest('tr[data-task-id]')) {
      const id = button.closest('tr[data-task-id]').dataset.taskId;
      if (action === 'log') openLog(id);
      else if (action === 'failures') showFailures(id);
      else if (['cancel', 'requeue'].includes(action)) {
        const what = action === 'cancel' ? 'Cancel' : 'Re-queue';
        act(`/api/tasks/${encodeURIComponent(id)}/${action}`, `${what} task ${shortId(id, 6)}`, button);
      }
    } else if (button.closest('tr[data-blocked-worker]') && action === 'unblock') {
      const row = button.closest('tr[data-blocked-worker]');
      unblock(detail.id, row.dataset.blockedWorker, row.dataset.taskType, button);
    } else if (jobRowEl && ['cancel', 'requeue'].includes(action)) {
      const id = jobRowEl.dataset.jobId;
      const what = action === 'cancel' ? 'Cancel' : 'Re-queue';
      act(`/api/jobs/${encodeURIComponent(id)}/${action}`, `${what} job ${shortId(id, 6)}`, button);
    }
  }

  // ------------------------------------------------------------------ multi-select, bulk actions

  /** The checkbox cell of a job or worker row. */
  function selectCell(kind, id, label) {
    return el('td', { class: 'select-cell', 'data-label': 'Select' },
      el('input', {
        type: 'checkbox', class: 'row-select', 'data-select': kind, 'data-id': id,
        checked: state.selected[kind].has(id), 'aria-label': label,
      }));
  }

  function rowBoxes(kind) {
    return [...document.querySelectorAll(`input.row-select[data-select="${kind}"]`)];
  }

  /**
   * After a render or a click: keep only the selected rows still shown, mirror the set in
   * the checkboxes and row classes, and show the bar with the count when any is selected.
   */
  function syncSelection(kind) {
    const boxes = rowBoxes(kind);
    const shown = new Set(boxes.map((b) => b.dataset.id));
    const set = state.selected[kind];
    for (const id of [...set]) if (!shown.has(id)) set.delete(id);
    for (const box of boxes) {
      box.checked = set.has(box.dataset.id);
      box.closest('tr').classList.toggle('is-selected', box.checked);
    }
    for (const all of document.querySelectorAll('input.select-all')) {
      const mine = [...all.closest('table').querySelectorAll('input.row-select')];
      const n = mine.filter((b) => b.checked).length;
      all.checked = mine.length > 0 && n === mine.length;
      all.indeterminate = n > 0 && n < mine.length;
    }
    const bar = $(`#${kind}-bulk`);
    if (!bar) return;
    bar.hidden = set.size === 0;
    setText(`#${kind}-bulk-count`, `${set.size} ${kind === 'jobs' ? 'job' : 'worker'}${set.size === 1 ? '' : 's'} selected`);
    if (set.size === 0) disarm(bar);
  }

  function onSelectChange(event) {
    const box = event.target;
    if (box.matches('input.row-select')) {
      const set = state.selected[box.dataset.select];
      if (box.checked) set.add(box.dataset.id); else set.delete(box.dataset.id);
      syncSelection(box.dataset.select);
    } else if (box.matches('input.select-all')) {
      const table = box.closest('table');
      const rows = [...table.querySelectorAll('input.row-select')];
      if (!rows.length) return;
      const kind = rows[0].dataset.select;
      for (const row of rows) {
        if (box.checked) state.selected[kind].add(row.dataset.id);
        else state.selected[kind].delete(row.dataset.id);
      }
      syncSelection(kind);
    }
  }

  /** Destructive bulk buttons ask for a second click within 5 s. */
  const ARMED_MS = 5000;
  function disarm(bar) {
    for (const b of bar.querySelectorAll('button.is-armed')) {
      b.classList.remove('is-armed');
      b.textContent = b.dataset.label;
    }
  }

  /** The one line a bulk report becomes: counts, then the first reasons. */
  function reportText(label, report) {
    if (!report || !Array.isArray(report.results)) return [`${label}: done.`, false];
    const parts = [`${report.done} done`];
    if (report.refused) parts.push(`${report.refused} refused`);
    if (report.not_found) parts.push(`${report.not_found} not found`);
    if (report.errors) parts.push(`${report.errors} failed`);
    const reasons = report.results.filter((r) => r.outcome !== 'done' && r.message)
      .slice(0, 3).map((r) => `${shortId(r.id, 6)}: ${r.message}`);
    const text = `${label}: ${parts.join(', ')}${reasons.length ? ` — ${reasons.join(' · ')}` : ''}`;
    return [text, report.done !== report.results.length];
  }

  function onBulkClick(event) {
    const button = event.target.closest('button[data-bulk]');
    if (!button || button.disabled) return;
    const bar = button.closest('.bulk-bar');
    const kind = bar.id === 'jobs-bulk' ? 'jobs' : 'workers';
    const action = button.dataset.bulk;
    const ids = [...state.selected[kind]];
    if (action === 'clear') {
      state.selected[kind].clear();
      syncSelection(kind);
      return;
    }
    if (!ids.length) return;
    const body = { action, ids };
    let what = button.dataset.label || button.textContent;
    if (action === 'priority') {
      const p = Number($('#jobs-bulk-priority').value);
      if (!Number.isInteger(p) || p < 1 || p > 100) {
        showMessage('The priority is an integer from 1 to 100.', true);
        return;
      }
      body.priority = p;
      what = `Set priority ${p}`;
    } else if (action === 'tag-add' || action === 'tag-remove') {
      const tag = $('#workers-bulk-tag').value.trim();
      if (!tag) {
        showMessage('Type the tag to add or remove first.', true);
        return;
      }
      body.action = 'tag';
      body[action === 'tag-add' ? 'add' : 'remove'] = [tag];
      what = `${action === 'tag-add' ? 'Add' : 'Remove'} tag ${tag}`;
    }
    if (['delete', 'forget'].includes(action) && !button.classList.contains('is-armed')) {
      disarm(bar);
      button.dataset.label = button.textContent;
      button.classList.add('is-armed');
      button.textContent = `Really ${action} ${ids.length}?`;
      setTimeout(() => disarm(bar), ARMED_MS);
      return;
    }
    disarm(bar);
    const label = `${what} (${ids.length} ${kind === 'jobs' ? 'job' : 'worker'}${ids.length === 1 ? '' : 's'})`;
    act(`/api/${kind}/bulk`, label, button, JSON.stringify(body), (report) => {
      const [text, isError] = reportText(label, report);
      showMessage(text, isError);
      if (report && Array.isArray(report.results)) {
        for (const r of report.results) if (r.outcome === 'done') state.selected[kind].delete(r.id);
      }
      syncSelection(kind);
    });
  }

  function setUpTokenForm() {
    const form = $('#admin-token-form');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('#admin-token');
      const token = input.value.trim();
      if (!token) {
        $('#admin-token-message').textContent = 'Enter the token first.';
        return;
      }
      try {
        sessionStorage.setItem(TOKEN_KEY, token);
      } catch (_) {
        $('#admin-token-message').textContent = 'This browser does not allow session storage; the token cannot be kept.';
        return;
      }
      input.value = '';
      form.hidden = true;
      const retry = state.pendingAction;
      state.pendingAction = null;
      if (retry) retry();
    });
    $('#admin-token-cancel').addEventListener('click', () => {
      state.pendingAction = null;
      form.hidden = true;
    });
  }

  // ------------------------------------------------------------------ job and worker views

  // `#/jobs/{id}` lists the job's tasks, `#/workers/{id}` the worker's recent tasks; both
  // refresh every POLL_OK_MS. A task's log opens below the table and follows live through
  // the log stream (EventSource), which is closed when the view changes.
  const detail = { kind: '', id: '', timer: null, seq: 0, logSource: null, logTask: '' };

  /** GET with the admin token when one is stored (the task API is admin-only). */
  async function getAdminJSON(url) {
    const token = storedToken();
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(url, { headers, cache: 'no-store' });
    } catch (_) {
      throw new RequestError(UNREACHABLE);
    }
    if (resp.status === 401) {
      askToken(() => refreshDetail(), Boolean(token));
      throw new RequestError('This view needs the admin token.');
    }
    if (!resp.ok) throw new RequestError(`Error ${resp.status}: ${await errorText(resp)}`);
    return resp.json();
  }

  const REQUEUEABLE = new Set(['failed', 'canceled', 'completed', 'soft-failed']);
  const CANCELLABLE = new Set(['queued', 'claimed-by-manager', 'soft-failed', 'active']);

  function taskRow(t) {
    const cls = TASK_CLASSES[t.status] || 'st-idle';
    const requeue = REQUEUEABLE.has(t.status);
    const cancel = CANCELLABLE.has(t.status);
    return el('tr', { 'data-task-id': t._id, class: ROW_CLASSES[cls] || 'row-idle' },
      el('td', { class: 'task-name', 'data-label': 'Task', title: t._id },
        t.name || '(unnamed)', el('span', { class: 'sub', text: `${t.task_type || ''} · ${shortId(t._id, 6)}` })),
      el('td', { class: 'status', 'data-label': 'Status' }, el('span', { class: `task-status badge ${cls}`, text: t.status })),
      // A queued task keeps the name of the worker that ran it last; it has none now.
      el('td', { class: 'worker', 'data-label': 'Worker', text: t.worker && t.worker !== '-' && t.status !== 'queued' ? t.worker : '–' }),
      el('td', { class: 'activity', 'data-label': 'Activity', text: t.activity || '–' }),
      el('td', { class: 'updated', 'data-label': 'Updated' }, timeEl(t.last_updated)),
      el('td', { class: 'actions-cell', 'data-label': 'Actions' },
        el('div', { class: 'actions' },
          el('button', { type: 'button', class: 'btn', 'data-action': 'log', title: 'Show the task log, live', text: 'Log' }),
          el('button', { type: 'button', class: 'btn', 'data-action': 'failures', title: 'Which workers failed this task, and when', text: 'Failures' }),
          el('button', {
            type: 'button', class: 'btn', 'data-action': 'requeue', disabled: !requeue,
            title: requeue ? 'Run the task again' : `The task is ${t.status}`, text: 'Re-queue',
          }),
          el('button', {
            type: 'button', class: 'btn btn-danger', 'data-action': 'cancel', disabled: !cancel,
            title: cancel ? 'Cancel the task (a running task stops at its next check)' : `The task is ${t.status}`,
            text: 'Cancel',
          }))));
  }

  async function refreshDetail() {
    if (!detail.kind) return;
    const seq = ++detail.seq;
    const id = encodeURIComponent(detail.id);
    const error = $('#detail-error');
    try {
      let tasks;
      if (detail.kind === 'job') {
        const [job, page, blocked] = await Promise.all([
          getAdminJSON(`/api/jobs/${id}`), getAdminJSON(`/api/jobs/${id}/tasks?limit=1000`),
          getAdminJSON(`/api/jobs/${id}/blocklist`)]);
        if (seq !== detail.seq) return;
        $('#detail-title').textContent = `Job ${job.name || '(unnamed)'}`;
        // Why the Manager failed it (no worker left), when it did.
        const reason = job.status_reason ? ` · ${job.status_reason}` : '';
        $('#detail-sub').textContent = `${job.job_type} · ${job.status} · priority ${job.priority} · id ${job._id || job.id}${reason}`;
        tasks = page.tasks || [];
        renderBlocklist(blocked.blocklist || []);
      } else {
        const page = await getAdminJSON(`/api/workers/${id}/tasks?limit=50`);
        if (seq !== detail.seq) return;
        renderBlocklist([]);
        const name = page.worker && page.worker.nickname;
        const tags = (page.worker && page.worker.tags) || [];
        $('#detail-title').textContent = `Worker ${name || detail.id}`;
        $('#detail-sub').textContent = `Tags: ${tags.length ? tags.join(', ') : 'none'} · its most recently updated tasks, newest first`;
        renderTagsForm(tags);
        tasks = (page.tasks || []).map((t) => Object.assign({ id: t._id }, t));
      }
      if (detail.kind === 'job') tasks = tasks.map((t) => Object.assign({ id: t._id }, t));
      reconcile($('#detail-tasks tbody'), tasks, 'data-task-id', taskRow);
      $('#detail-empty').hidden = tasks.length > 0;
      error.hidden = true;
    } catch (e) {
      if (seq !== detail.seq) return;
      error.textContent = e.message;
      error.hidden = false;
    }
  }

  // ------------------------------------------------------------------ worker tags

  /** The worker page's tag editor (docs/jobs.md, "Worker tags"); left alone while edited. */
  function renderTagsForm(tags) {
    const form = $('#detail-tags-form');
    form.hidden = false;
    form.dataset.current = JSON.stringify(tags);
    const input = $('#detail-tags');
    if (document.activeElement !== input) input.value = tags.join(', ');
  }

  function setUpTagsForm() {
    const form = $('#detail-tags-form');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (detail.kind !== 'worker') return;
      const current = JSON.parse(form.dataset.current || '[]');
      const wanted = [...new Set($('#detail-tags').value.split(/[\s,]+/).filter((t) => t))];
      const add = wanted.filter((t) => !current.includes(t));
      const remove = current.filter((t) => !wanted.includes(t));
      if (!add.length && !remove.length) {
        showMessage('The worker has these tags already.', false);
        return;
      }
      $('#detail-tags').blur();
      act(`/api/workers/${encodeURIComponent(detail.id)}/tags`, `Tags of worker ${shortId(detail.id, 6)}`,
        $('#detail-tags-save'), JSON.stringify({ add, remove }));
    });
  }

  // ------------------------------------------------------------------ retries, blocklist

  /** A job's blocklist (docs/jobs.md, "Blocklist"): one row per task type and worker. */
  function renderBlocklist(entries) {
    $('#detail-blocklist-box').hidden = entries.length === 0;
    const rows = entries.map((e) => Object.assign({ id: `${e.task_type}/${e.worker_id}` }, e));
    reconcile($('#detail-blocklist tbody'), rows, 'data-key', (e) => el('tr', {
      'data-key': e.id, 'data-blocked-worker': e.worker_id, 'data-task-type': e.task_type,
    },
    el('td', { 'data-label': 'Task type', text: e.task_type }),
    el('td', { 'data-label': 'Worker', title: e.worker_id, text: e.worker || shortId(e.worker_id, 6) }),
    el('td', { 'data-label': 'Blocklisted' }, timeEl(e.added)),
    el('td', { class: 'actions-cell', 'data-label': 'Actions' },
      el('div', { class: 'actions' },
        el('button', {
          type: 'button', class: 'btn', 'data-action': 'unblock',
          title: `Let this worker run the job's ${e.task_type} tasks again`, text: 'Remove',
        })))));
  }

  /** Take a worker off the shown job's blocklist (DELETE with a JSON body). */
  async function unblock(jobId, workerId, taskType, button) {
    const token = storedToken();
    const headers = { Accept: 'application/json', 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const label = `Unblock worker ${shortId(workerId, 6)} (${taskType})`;
    button.classList.add('busy');
    let resp;
    try {
      resp = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/blocklist`, {
        method: 'DELETE', headers, body: JSON.stringify({ worker_id: workerId, task_type: taskType }),
      });
    } catch (_) {
      showMessage(`${label}: the Manager could not be reached. Is it still running?`, true);
      return;
    } finally {
      button.classList.remove('busy');
    }
    if (resp.status === 401) {
      if (token) {
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
      }
      askToken(() => unblock(jobId, workerId, taskType, button), Boolean(token));
      return;
    }
    if (!resp.ok) {
      showMessage(`${label} refused (${resp.status}): ${await errorText(resp)}`, true);
      return;
    }
    showMessage(`${label}: done.`, false);
    refreshDetail();
  }

  /** A task's failure record (retries): which workers failed it, and when. */
  async function showFailures(taskId) {
    const box = $('#task-failures-box');
    const list = $('#task-failures');
    const info = $('#task-failures-state');
    box.hidden = false;
    $('#task-failures-title').textContent = `Failures of task ${shortId(taskId, 6)}`;
    info.textContent = 'Loading…';
    list.replaceChildren();
    let task;
    try {
      task = await getAdminJSON(`/api/tasks/${encodeURIComponent(taskId)}`);
    } catch (e) {
      info.textContent = e.message;
      return;
    }
    const failures = task.failures || [];
    info.textContent = failures.length
      ? `${task.status}: failed on ${failures.length} attempt(s); these workers are not given it again.`
      : `${task.status}: no worker failed this task since it was last queued.`;
    list.replaceChildren(...failures.map((f) => el('li', { 'data-worker-id': f.worker_id },
      el('span', { class: 'worker', title: f.worker_id, text: f.worker || shortId(f.worker_id, 6) }),
      ' · ', timeEl(f.at))));
  }

  /**
   * Follow an event stream with fetch, for when the admin token must be sent (EventSource
   * cannot send headers). Calls onEvent(type, data) per event; returns {close()}.
   */
  function fetchEvents(url, token, onOpen, onEvent, onEnd) {
    const abort = new AbortController();
    (async () => {
      let resp;
      try {
        resp = await fetch(url, {
          headers: token
            ? { Accept: 'text/event-stream', Authorization: `Bearer ${token}` }
            : { Accept: 'text/event-stream' },
          cache: 'no-store', signal: abort.signal,
        });
      } catch (_) {
        if (!abort.signal.aborted) onEnd('The Manager could not be reached.');
        return;
      }
      if (!resp.ok || !resp.body) {
        onEnd(`Error ${resp.status}: ${await errorText(resp)}`);
        return;
      }
      onOpen();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) type = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (data.length) onEvent(type, data.join('\n'));
          }
        }
      } catch (_) {
        // aborted, or the connection broke
      }
      if (!abort.signal.aborted) onEnd('The log stream ended.');
    })();
    return { close: () => abort.abort() };
  }

  function closeLog() {
    if (detail.logSource) detail.logSource.close();
    detail.logSource = null;
    detail.logTask = '';
    $('#task-log-box').hidden = true;
    $('#task-log').replaceChildren();
  }

  /** Show a task's last lines and follow new ones as they are stored. */
  function openLog(taskId) {
    closeLog();
    detail.logTask = taskId;
    const box = $('#task-log-box');
    const pre = $('#task-log');
    const info = $('#task-log-state');
    box.hidden = false;
    $('#task-log-title').textContent = `Task log ${shortId(taskId, 6)}`;
    info.textContent = 'Connecting…';
    const url = `/api/tasks/${encodeURIComponent(taskId)}/log/stream?tail=200`;
    const append = (text) => {
      const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(document.createTextNode(`${text}\n`));
      if (follow) pre.scrollTop = pre.scrollHeight;
    };
    const token = storedToken();
    if (token || typeof EventSource === 'undefined') {
      // With the admin token (which EventSource cannot send), or without EventSource.
      detail.logSource = fetchEvents(url, token,
        () => { info.textContent = 'Following the log live.'; },
        (_type, data) => append(data),
        (why) => { if (detail.logTask === taskId) info.textContent = why; });
      return;
    }
    const source = new EventSource(url);
    detail.logSource = source;
    source.addEventListener('open', () => { info.textContent = 'Following the log live.'; });
    source.addEventListener('message', (event) => append(event.data));
    source.addEventListener('dropped', (event) => append(event.data));
    source.addEventListener('error', () => {
      info.textContent = source.readyState === EventSource.CLOSED
        ? 'The log stream ended. If the Manager asks for the admin token, enter it (any action asks for it) and open the log again.'
        : 'The log stream was interrupted; reconnecting…';
    });
  }

  /** Follow the location hash: the overview, a job's page or a worker's page. */
  function route() {
    const m = /^#\/(jobs|workers)\/([0-9a-fA-F]{24})$/.exec(window.location.hash);
    closeLog();
    clearInterval(detail.timer);
    detail.timer = null;
    detail.seq += 1;
    $('#detail-tasks tbody').replaceChildren();
    $('#detail-blocklist tbody').replaceChildren();
    $('#detail-blocklist-box').hidden = true;
    $('#task-failures-box').hidden = true;
    if (!m) {
      detail.kind = '';
      document.body.classList.remove('detail-view');
      $('#detail').hidden = true;
      return;
    }
    detail.kind = m[1] === 'jobs' ? 'job' : 'worker';
    detail.id = m[2];
    $('#detail-title').textContent = m[1] === 'jobs' ? 'Job' : 'Worker';
    $('#detail-sub').textContent = '';
    $('#detail-tags-form').hidden = true;
    document.body.classList.add('detail-view');
    $('#detail').hidden = false;
    refreshDetail();
    detail.timer = setInterval(refreshDetail, POLL_OK_MS);
  }

  // ------------------------------------------------------------------ latest image

  function setUpLatestImage() {
    const img = $('#latest-image-img');
    const placeholder = $('#latest-image-placeholder');
    if (!img) return;
    let version = Date.now();
    const reload = () => {
      version += 1;
      img.src = `/latest-image.jpg?v=${version}`;
    };
    img.addEventListener('load', () => {
      img.hidden = false;
      placeholder.hidden = true;
    });
    img.addEventListener('error', () => {
      img.hidden = true;
      placeholder.hidden = false;
    });
    reload();
    if (typeof EventSource === 'undefined') {
      state.imageTimer = setInterval(reload, IMAGE_FALLBACK_MS);
      return;
    }
    const events = new EventSource('/imagewatch');
    events.addEventListener('image', reload);
    events.addEventListener('error', () => {
      // A closed stream (404, Manager gone) is not retried by the browser: poll instead.
      if (events.readyState === EventSource.CLOSED && !state.imageTimer) {
        state.imageTimer = setInterval(reload, IMAGE_FALLBACK_MS);
      }
    });
    events.addEventListener('open', () => {
      if (state.imageTimer) {
        clearInterval(state.imageTimer);
        state.imageTimer = null;
      }
    });
  }

  // ------------------------------------------------------------------ start

  function start() {
    // Only the section for this mode stays: jobs in standalone mode, the link in upstream mode.
    const unused = state.mode === 'standalone' ? $('#upstream-link') : $('#jobs');
    if (unused) unused.remove();

    document.addEventListener('click', onActionClick);
    document.addEventListener('click', onBulkClick);
    document.addEventListener('change', onSelectChange);
    for (const button of document.querySelectorAll('#workers-table button.sort')) {
      button.addEventListener('click', () => sortWorkers(button.dataset.sort));
    }
    $('#workers-sort').addEventListener('change', (event) => {
      const [key, order] = event.target.value.split(':');
      sortWorkers(key, order);
    });
    setUpTokenForm();
    setUpTagsForm();
    setUpLatestImage();
    window.addEventListener('hashchange', route);
    route();
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) poll();
    });
    poll();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
