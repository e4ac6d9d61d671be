// The live dashboard: one snapshot query, then a rocketUpdated subscription, both over one graphql-ws
// socket; open gaps from GET /gaps; a rocket's history from GET /rockets/:channel/events.
//
// It must keep up with a server under the load generator, so nothing touches the DOM per message: updates
// wait in a Map keyed by channel (a newer state replaces an older one) and are painted at most once per
// FLUSH_INTERVAL_MS, in an animation frame, changing only the cells whose text changed. Only the rows in
// view are in the DOM (spacer rows stand for the others): laying out a table of thousands of rows on every
// paint is what would freeze the page.

import { createClient } from './graphql-ws/client.js';

const FLUSH_INTERVAL_MS = 100;
const TICK_MS = 1000;
/** Rows rendered above and below the visible ones, so a short scroll shows no blank. */
const OVERSCAN = 10;
const MAX_GAP_ROWS = 50;
const HISTORY_LIMIT = 200;
/** More changed cells than this in one flush are painted without the highlight. */
const MAX_FLASHES = 200;
/** Sorting a large fleet on every flush would stall the page: beyond this many rockets, re-sort every second. */
const LARGE_FLEET = 2000;
const LARGE_FLEET_REORDER_MS = 1000;

const ROCKET_FIELDS = 'channel type mission speed status explodedReason updatedAt lastMessageNumber';
const SNAPSHOT = `query DashboardSnapshot {
  rockets { nodes { ${ROCKET_FIELDS} buffer { waitingFor count oldestSince } } }
}`;
// No buffer here: on the live feed it would cost the server a read per update. Gaps come from /gaps.
const LIVE = `subscription DashboardLive { rocketUpdated { ${ROCKET_FIELDS} } }`;

const speedFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const countFormat = new Intl.NumberFormat('en-US');

/** Text compares by code point, as the server sorts; a missing value sorts as the empty string. */
const compareValues = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const utc = (iso) => (iso ? iso.slice(0, 19).replace('T', ' ') : '');
/** A message time (any offset) as its UTC time of day; the date and the text as sent are in the title. */
const clock = (time) => {
  const ms = Date.parse(time);
  return Number.isNaN(ms) ? time : new Date(ms).toISOString().slice(11, 23);
};
const age = (iso) => {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60
    ? `${s}s`
    : s < 3600
      ? `${Math.floor(s / 60)}m ${s % 60}s`
      : `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
};

/** A gap as the table shows it, or undefined when the rocket has moved past it since /gaps was read. */
const gapOf = (row) => {
  const gap = gaps.get(row.rocket.channel);
  return gap && gap.waitingFor > row.rocket.lastMessageNumber ? gap : undefined;
};

/** Each column: the text of its cell and the value it sorts by. */
const COLUMNS = {
  channel: { text: (r) => r.channel, key: (r) => r.channel },
  type: { text: (r) => r.type ?? '—', key: (r) => r.type ?? '' },
  mission: { text: (r) => r.mission ?? '—', key: (r) => r.mission ?? '' },
  speed: { text: (r) => speedFormat.format(r.speed), key: (r) => r.speed },
  status: { text: (r) => r.status.toLowerCase(), key: (r) => r.status.toLowerCase() },
  last: { text: (r) => `#${r.lastMessageNumber}`, key: (r) => r.lastMessageNumber },
  gap: {
    text: (r, gap) => (gap ? `waiting for #${gap.waitingFor} · ${countFormat.format(gap.count)} buffered` : ''),
    key: (r, gap) => (gap ? gap.count : 0),
  },
  updated: { text: (r) => utc(r.updatedAt), key: (r) => r.updatedAt },
};
const COLUMN_NAMES = Object.keys(COLUMNS);

const $ = (selector) => document.querySelector(selector);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

// --- State -------------------------------------------------------------------------------------------------

/** channel → {rocket, tr?, cells?, texts?}; `tr` only while the row is in the DOM. */
const rows = new Map();
/** channel → the newest state not yet painted. */
const pending = new Map();
/** Channels whose cells must be repainted though their state did not change (their gap did). */
const dirty = new Set();
/** channel → {waitingFor, count, oldestSince}, from the latest /gaps (or the snapshot's buffers). */
let gaps = new Map();
let gapsFromServer = true;
let sort = { column: 'channel', order: 'asc' };
let filter = '';
let needsReorder = true;
let lastReorder = 0;
let explodedCount = 0;
let flushTimer = 0;
let lastFlush = 0;
let selected;
const stats = { updates: 0, flushes: 0, lastRateUpdates: 0 };
// For tests and curious operators: how much batching happens.
globalThis.rocketsDashboard = { stats };

// --- Batching ----------------------------------------------------------------------------------------------

/** Takes a rocket state from the snapshot or the live feed; keeps whichever is newest per channel. */
function offer(rocket) {
  const known = pending.get(rocket.channel) ?? rows.get(rocket.channel)?.rocket;
  if (known && known.lastMessageNumber > rocket.lastMessageNumber) return;
  pending.set(rocket.channel, rocket);
  schedule();
}

function schedule() {
  if (flushTimer) return;
  const wait = Math.max(0, lastFlush + FLUSH_INTERVAL_MS - performance.now());
  flushTimer = setTimeout(() => requestAnimationFrame(flush), wait);
}

function flush() {
  flushTimer = 0;
  lastFlush = performance.now();
  stats.flushes += 1;
  const sortKey = COLUMNS[sort.column].key;
  const flashes = { left: pending.size + dirty.size > MAX_FLASHES ? 0 : MAX_FLASHES };
  let selectedChanged = false;

  for (const [channel, rocket] of pending) {
    let row = rows.get(channel);
    if (!row) {
      row = { rocket };
      rows.set(channel, row);
      needsReorder = true;
      if (rocket.status === 'EXPLODED') explodedCount += 1;
    } else {
      const gap = gapOf(row);
      if (filter || sortKey(row.rocket, gap) !== sortKey(rocket, gapOf({ rocket }))) needsReorder = true;
      if (rocket.status !== row.rocket.status) explodedCount += rocket.status === 'EXPLODED' ? 1 : -1;
      row.rocket = rocket;
    }
    if (row.tr) paint(row, flashes);
    if (channel === selected) selectedChanged = true;
  }
  pending.clear();
  for (const channel of dirty) {
    const row = rows.get(channel);
    if (row?.tr) paint(row, flashes);
  }
  if (dirty.size > 0 && sort.column === 'gap') needsReorder = true;
  dirty.clear();

  if (needsReorder) {
    if (rows.size <= LARGE_FLEET || lastFlush - lastReorder >= LARGE_FLEET_REORDER_MS) reorder();
    else schedule();
  }
  paintCounts();
  if (selectedChanged) void loadHistory();
}

// --- The rockets table -------------------------------------------------------------------------------------

const tbody = $('#rockets tbody');

function createRow(row) {
  const tr = el('tr');
  tr.dataset.channel = row.rocket.channel;
  row.cells = {};
  row.texts = {};
  for (const name of COLUMN_NAMES) {
    const td = el('td', name === 'speed' || name === 'last' ? 'num' : '');
    td.dataset.col = name;
    tr.append(td);
    row.cells[name] = td;
  }
  row.tr = tr;
  paint(row, { left: 0 });
}

/** Writes the cells whose text changed (highlighting them while `flashes.left` lasts) and the row's marks. */
function paint(row, flashes) {
  const { rocket, tr, cells, texts } = row;
  const gap = gapOf(row);
  for (const name of COLUMN_NAMES) {
    const text = COLUMNS[name].text(rocket, gap);
    if (texts[name] === text) continue;
    texts[name] = text;
    cells[name].textContent = text;
    if (flashes.left > 0) {
      flashes.left -= 1;
      cells[name].animate([{ backgroundColor: 'var(--flash)' }, { backgroundColor: 'transparent' }], 900);
    }
  }
  const exploded = rocket.status === 'EXPLODED';
  tr.classList.toggle('exploded', exploded);
  tr.classList.toggle('gap', gap !== undefined);
  tr.classList.toggle('selected', rocket.channel === selected);
  cells.status.title = exploded ? `exploded: ${rocket.explodedReason ?? ''}` : '';
  cells.gap.title = gap ? `waiting for #${gap.waitingFor} since ${utc(gap.oldestSince)} UTC` : '';
  cells.channel.title = rocket.channel;
}

const matches = (rocket) =>
  !filter ||
  rocket.channel.toLowerCase().includes(filter) ||
  (rocket.type ?? '').toLowerCase().includes(filter) ||
  (rocket.mission ?? '').toLowerCase().includes(filter);

/** Orders `{key, row}` by key, then channel (as the server breaks ties), in the chosen direction. */
function compareKeyed(a, b) {
  const c = compareValues(a.key, b.key) || compareValues(a.row.rocket.channel, b.row.rocket.channel);
  return sort.order === 'asc' ? c : -c;
}

/** The matching rows in display order; only those in view have a `tr`. */
let sorted = [];

/** Sorts the matching rows again, then renders the window. */
function reorder() {
  needsReorder = false;
  lastReorder = performance.now();
  const key = COLUMNS[sort.column].key;
  const keyed = [];
  for (const row of rows.values()) if (matches(row.rocket)) keyed.push({ key: key(row.rocket, gapOf(row)), row });
  keyed.sort(compareKeyed);
  sorted = keyed.map((k) => k.row);
  $('#empty').hidden = rows.size > 0;
  const none = $('#no-match');
  none.hidden = sorted.length > 0 || rows.size === 0;
  none.textContent = `No rocket matches “${filter}”.`;
  renderWindow();
}

const fleet = $('.fleet');
const spacer = () => {
  const tr = el('tr', 'spacer');
  tr.setAttribute('aria-hidden', 'true');
  const td = el('td');
  td.colSpan = COLUMN_NAMES.length;
  tr.append(td);
  return tr;
};
const above = spacer();
const below = spacer();
tbody.append(above, below);
/** Measured from the first row rendered (all rows are one line high), with the height of the header. */
let rowHeight = 0;
let headHeight = 0;
/** Kept from scroll events, so rendering never reads layout (which would force it mid-frame). */
let scrollTop = 0;
let windowFrame = 0;

/** Renders the rows in view (and OVERSCAN around them) between the spacers, moving only misplaced rows. */
function renderWindow() {
  windowFrame = 0;
  const height = rowHeight || 33;
  const top = Math.max(0, scrollTop - headHeight);
  const first = Math.max(0, Math.min(sorted.length, Math.floor(top / height)) - OVERSCAN);
  // The table never shows more than the window's height of rows.
  const last = Math.min(sorted.length, first + Math.ceil(window.innerHeight / height) + 2 * OVERSCAN);
  above.firstChild.style.height = `${first * height}px`;
  below.firstChild.style.height = `${(sorted.length - last) * height}px`;
  let cursor = above.nextElementSibling;
  for (let i = first; i < last; i += 1) {
    const row = sorted[i];
    if (!row.tr) createRow(row);
    if (row.tr === cursor) cursor = cursor.nextElementSibling;
    else tbody.insertBefore(row.tr, cursor);
  }
  while (cursor !== below) {
    const next = cursor.nextElementSibling;
    const row = rows.get(cursor.dataset.channel);
    if (row) row.tr = row.cells = row.texts = undefined;
    cursor.remove();
    cursor = next;
  }
  if (rowHeight === 0 && last > first) {
    rowHeight = sorted[first].tr.getBoundingClientRect().height;
    headHeight = tbody.offsetTop;
    if (rowHeight > 0 && rowHeight !== height) renderWindow();
  }
}

function scheduleWindow() {
  windowFrame ||= requestAnimationFrame(renderWindow);
}
fleet.addEventListener(
  'scroll',
  () => {
    scrollTop = fleet.scrollTop;
    scheduleWindow();
  },
  { passive: true },
);
window.addEventListener('resize', scheduleWindow);

/** Scrolls a rocket's row into the middle of the view. */
function reveal(channel) {
  const index = sorted.findIndex((row) => row.rocket.channel === channel);
  if (index < 0) return;
  fleet.scrollTop = headHeight + index * (rowHeight || 33) - fleet.clientHeight / 2;
  scrollTop = fleet.scrollTop;
  renderWindow();
}

function paintCounts() {
  $('#count-rockets').textContent = countFormat.format(rows.size);
  $('#count-exploded').textContent = countFormat.format(explodedCount);
  $('#count-flying').textContent = countFormat.format(rows.size - explodedCount);
  $('#count-gaps').textContent = countFormat.format(gaps.size);
}

function paintSortHeaders() {
  for (const th of document.querySelectorAll('#rockets th[data-sort]')) {
    const active = th.dataset.sort === sort.column;
    th.setAttribute('aria-sort', active ? (sort.order === 'asc' ? 'ascending' : 'descending') : 'none');
  }
}

$('#rockets thead').addEventListener('click', (e) => {
  const th = e.target.closest('th[data-sort]');
  if (!th) return;
  const column = th.dataset.sort;
  sort = { column, order: sort.column === column && sort.order === 'asc' ? 'desc' : 'asc' };
  paintSortHeaders();
  needsReorder = true;
  lastReorder = 0;
  schedule();
});

$('#filter').addEventListener('input', (e) => {
  filter = e.target.value.trim().toLowerCase();
  needsReorder = true;
  lastReorder = 0;
  schedule();
});

tbody.addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-channel]');
  if (tr) select(tr.dataset.channel);
});

// --- Gaps --------------------------------------------------------------------------------------------------

/** Replaces the known gaps; repaints the rows whose gap changed. */
function setGaps(list) {
  const next = new Map(list.map((g) => [g.channel, g]));
  for (const [channel, gap] of next) {
    const old = gaps.get(channel);
    if (!old || old.waitingFor !== gap.waitingFor || old.count !== gap.count) dirty.add(channel);
  }
  for (const channel of gaps.keys()) if (!next.has(channel)) dirty.add(channel);
  gaps = next;
  paintGaps();
  schedule();
}

function paintGaps() {
  const section = $('#gaps');
  const list = [...gaps.values()].sort((a, b) => compareValues(a.oldestSince, b.oldestSince));
  const body = el('tbody');
  for (const gap of list.slice(0, MAX_GAP_ROWS)) {
    const tr = el('tr');
    tr.dataset.channel = gap.channel;
    tr.append(
      el('td', 'channel', gap.channel),
      el('td', '', `#${gap.waitingFor}`),
      el('td', 'num', countFormat.format(gap.count)),
      el('td', '', gap.oldestSince ? `${age(gap.oldestSince)} ago` : ''),
    );
    tr.children[0].title = gap.channel;
    if (gap.oldestSince) tr.children[3].title = `${utc(gap.oldestSince)} UTC`;
    body.append(tr);
  }
  section.querySelector('tbody').replaceWith(body);
  section.querySelector('table').hidden = list.length === 0;
  $('#gaps-none').hidden = list.length > 0;
  const more = $('#gaps-more');
  more.hidden = list.length <= MAX_GAP_ROWS;
  more.textContent = `and ${countFormat.format(list.length - MAX_GAP_ROWS)} more`;
}

$('#gaps').addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-channel]');
  if (!tr || !rows.has(tr.dataset.channel)) return;
  reveal(tr.dataset.channel);
  select(tr.dataset.channel);
});

let gapsLoading = false;
async function loadGaps() {
  if (gapsLoading || !gapsFromServer) return;
  gapsLoading = true;
  try {
    const res = await fetch('/gaps');
    // A server without /gaps: the snapshot's buffers are all there is.
    if (res.status === 404) gapsFromServer = false;
    else if (res.ok) setGaps(await res.json());
  } catch {
    // Offline: the connection status says so; the next tick retries.
  } finally {
    gapsLoading = false;
  }
}

// --- History -----------------------------------------------------------------------------------------------

const historyState = { channel: undefined, last: 0, loading: false, again: false };

const EVENT_NAMES = {
  RocketLaunched: 'launched',
  RocketSpeedIncreased: 'speed up',
  RocketSpeedDecreased: 'speed down',
  RocketMissionChanged: 'mission',
  RocketExploded: 'exploded',
  MessageSkipped: 'skipped',
};

function describe(event) {
  const p = event.payload;
  switch (event.messageType) {
    case 'RocketLaunched':
      return `${p.type} on ${p.mission} at ${speedFormat.format(p.launchSpeed)}`;
    case 'RocketSpeedIncreased':
      return `+${speedFormat.format(p.by)}`;
    case 'RocketSpeedDecreased':
      return `−${speedFormat.format(p.by)}`;
    case 'RocketMissionChanged':
      return `→ ${p.newMission}`;
    case 'RocketExploded':
    case 'MessageSkipped':
      return p.reason;
    default:
      return JSON.stringify(p);
  }
}

function select(channel) {
  const previous = rows.get(selected);
  selected = channel;
  if (previous?.tr) previous.tr.classList.remove('selected');
  rows.get(channel)?.tr?.classList.add('selected');
  Object.assign(historyState, { channel, last: 0 });
  $('#history').hidden = false;
  $('#hint').hidden = true;
  $('#history-channel').textContent = channel;
  $('#history tbody').replaceChildren();
  $('#history-note').textContent = 'Loading…';
  paintSummary();
  void loadHistory();
}

function paintSummary() {
  const rocket = rows.get(selected)?.rocket;
  if (!rocket) return;
  const parts = [rocket.type ?? 'not launched', rocket.mission ?? '—', `speed ${speedFormat.format(rocket.speed)}`];
  parts.push(rocket.status === 'EXPLODED' ? `exploded: ${rocket.explodedReason ?? ''}` : 'flying');
  $('#history-summary').textContent = parts.join(' · ');
}

$('#history-close').addEventListener('click', () => {
  rows.get(selected)?.tr?.classList.remove('selected');
  selected = historyState.channel = undefined;
  $('#history').hidden = true;
  $('#hint').hidden = false;
});

/** Fetches the selected rocket's events after the newest shown (at first, its latest HISTORY_LIMIT). */
async function loadHistory() {
  if (historyState.loading) {
    historyState.again = true;
    return;
  }
  historyState.loading = true;
  try {
    do {
      historyState.again = false;
      const channel = historyState.channel;
      if (channel === undefined) return;
      paintSummary();
      const latest = rows.get(channel)?.rocket.lastMessageNumber ?? 0;
      const after = historyState.last || Math.max(0, latest - HISTORY_LIMIT);
      const res = await fetch(`/rockets/${encodeURIComponent(channel)}/events?after=${after}&limit=${HISTORY_LIMIT}`);
      if (!res.ok) throw new Error(`GET events: ${res.status}`);
      const events = await res.json();
      if (channel !== historyState.channel) continue;
      appendHistory(events, historyState.last > 0);
      if (events.length > 0) historyState.last = events[events.length - 1].messageNumber;
      if (events.length === HISTORY_LIMIT) historyState.again = true;
      const first = Number($('#history tbody tr:last-child')?.dataset.number ?? 1);
      $('#history-note').textContent =
        first > 1 ? `Latest ${HISTORY_LIMIT} events; the full log is in GET /rockets/:channel/events.` : '';
    } while (historyState.again);
  } catch (e) {
    $('#history-note').textContent = `Could not load the history: ${e.message}`;
  } finally {
    historyState.loading = false;
  }
}

/** Puts events (oldest first, as the server sends them) at the top of the history, newest first. */
function appendHistory(events, highlight) {
  const fragment = document.createDocumentFragment();
  for (let i = events.length - 1; i >= 0; i -= 1) {
    const event = events[i];
    const tr = el('tr', event.messageType === 'RocketExploded' ? 'exploded' : '');
    tr.dataset.number = String(event.messageNumber);
    tr.append(
      el('td', 'num', `#${event.messageNumber}`),
      el('td', `event ${event.messageType}`, EVENT_NAMES[event.messageType] ?? event.messageType),
      el('td', 'time', clock(event.messageTime)),
      el('td', '', describe(event)),
    );
    tr.children[2].title = `${event.messageTime} as sent; recorded ${event.recordedAt}`;
    if (highlight) tr.animate([{ backgroundColor: 'var(--flash)' }, { backgroundColor: 'transparent' }], 900);
    fragment.append(tr);
  }
  const body = $('#history tbody');
  body.prepend(fragment);
  while (body.children.length > HISTORY_LIMIT) body.lastElementChild.remove();
}

// --- Connection --------------------------------------------------------------------------------------------

function setConnection(state, text = state) {
  const node = $('#connection');
  node.className = `connection ${state}`;
  node.textContent = text;
}

/** What went wrong, from GraphQL errors, a close event or an Error. */
const reason = (e) =>
  Array.isArray(e)
    ? e.map((x) => x.message).join('; ')
    : e?.reason || e?.message || (e?.code ? `closed (${e.code})` : 'error');

/**
 * A token for SUBSCRIPTION_TOKEN, if the page was opened as /#token=… (a fragment never reaches logs). Read
 * as written, percent-decoded only: form decoding would turn a base64 token's `+` into a space. Then taken
 * out of the address bar and the history.
 */
function tokenFromFragment() {
  const raw = /(?:^#|&)token=([^&]*)/.exec(location.hash)?.[1];
  if (raw === undefined) return undefined;
  history.replaceState(null, '', location.pathname + location.search);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}
const token = tokenFromFragment();

const client = createClient({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`,
  connectionParams: token ? { token } : undefined,
  lazy: false,
  keepAlive: 10_000,
  retryAttempts: Infinity,
  retryWait: (retries) =>
    new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** retries) + Math.random() * 250)),
  shouldRetry: () => true,
  onNonLazyError: (e) => setConnection('offline', `offline: ${reason(e)}`),
  on: {
    connecting: (retrying) =>
      setConnection(retrying ? 'reconnecting' : 'connecting', retrying ? 'reconnecting…' : 'connecting…'),
    connected: (_socket, _payload, wasRetry) => {
      setConnection('live');
      // The client resubscribes the live feed once this returns; the snapshot goes after it on the same
      // socket, so what was missed while offline is read, and nothing applied since is lost.
      if (wasRetry) setTimeout(() => void loadSnapshot(), 0);
    },
    closed: (e) => setConnection('reconnecting', `reconnecting… (${reason(e)})`),
  },
});

/** One query for every rocket; its states merge with the live ones, newest per channel winning. */
function loadSnapshot() {
  return new Promise((resolve) => {
    let failed = false;
    const fail = (e) => {
      failed = true;
      setConnection('error', `snapshot failed: ${reason(e)}`);
    };
    client.subscribe(
      { query: SNAPSHOT },
      {
        next: ({ data, errors }) => {
          if (errors) fail(errors);
          if (!data) return;
          const buffers = [];
          for (const node of data.rockets.nodes) {
            const { buffer, ...rocket } = node;
            offer(rocket);
            if (buffer.count > 0) buffers.push({ channel: rocket.channel, ...buffer });
          }
          if (!gapsFromServer) setGaps(buffers);
          else void loadGaps();
        },
        error: (e) => {
          fail(e);
          resolve();
        },
        complete: () => {
          if (!failed) setConnection('live');
          resolve();
        },
      },
    );
  });
}

/** The live feed of every rocket. If the server ends it (FELL_BEHIND), subscribes again and re-reads. */
function startLive() {
  client.subscribe(
    { query: LIVE },
    {
      next: ({ data, errors }) => {
        if (errors) setConnection('error', reason(errors));
        if (!data) return;
        stats.updates += 1;
        offer(data.rocketUpdated);
      },
      error: (e) => {
        setConnection('resyncing', `resyncing: ${reason(e)}`);
        setTimeout(startLive, Array.isArray(e) ? 500 : 5000);
      },
      complete: () => {},
    },
  );
  // Sent after the subscription on the same socket: the server starts the feed before it reads the fleet.
  void loadSnapshot();
}

// --- Start -------------------------------------------------------------------------------------------------

function tick() {
  const rate = stats.updates - stats.lastRateUpdates;
  stats.lastRateUpdates = stats.updates;
  $('#count-rate').textContent = countFormat.format((rate * 1000) / TICK_MS);
  if (document.hidden) return;
  if (gapsFromServer) void loadGaps();
  else paintGaps();
}

paintSortHeaders();
startLive();
setInterval(tick, TICK_MS);
