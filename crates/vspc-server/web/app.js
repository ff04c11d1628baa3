// The vSPC web console: the live list of VM ports (server-sent events from /api/events) and
// a terminal on one of them (xterm.js over the binary WebSocket /ws/terminal). Text that VMs
// choose (names, labels) is only ever set as textContent, never parsed as HTML.
import { Terminal } from '/vendor/xterm.mjs';
import { FitAddon } from '/vendor/addon-fit.mjs';

const $ = (id) => document.getElementById(id);
const MODES = { ro: 'read-only', rw: 'read-write', excl: 'exclusive' };
// Close codes after which reconnecting cannot help (see the server's terminal module).
const FINAL = new Map([
  [1002, 'malformed frame'], [1003, 'binary messages only'], [1009, 'message too big'],
  [4404, 'no such VM'], [4409, 'held by another client'],
]);
// Keys typed while the terminal reconnects are kept, up to this many bytes.
const MAX_PENDING = 64 * 1024;

let current = null;

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function time(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

function render(listing) {
  const body = $('vms');
  body.replaceChildren();
  $('summary').textContent =
    `${listing.vms.length} VM port(s) · ${listing.clients} client(s) · ` +
    `${listing.vmotions_pending} vMotion(s) pending`;
  if (listing.vms.length === 0) {
    const row = body.insertRow();
    const td = cell(row, 'no VM ports yet', 'empty');
    td.colSpan = 7;
    return;
  }
  for (const vm of listing.vms) {
    const row = body.insertRow();
    row.dataset.vm = vm.id;
    if (current && current.vm === String(vm.id)) row.className = 'selected';
    cell(row, `${vm.id}`);
    cell(row, vm.name + (vm.flagged ? ' (flagged)' : ''));
    cell(row, vm.label);
    cell(row, vm.state, `state-${vm.state}`);
    const modes = vm.clients.map((c) => c.mode).join(', ');
    cell(row, vm.clients.length ? `${vm.clients.length} (${modes})` : '0');
    const history = vm.vmotions;
    const last = history[history.length - 1];
    const motions = cell(row, last ? `${history.length} · ${last.event} ${time(last.at)}` : '—');
    motions.title = history.map((r) => `${time(r.at)} ${r.event} ${r.sequence}`).join('\n');
    const actions = cell(row, '');
    for (const mode of Object.keys(MODES)) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = mode;
      button.title = `open a ${MODES[mode]} terminal`;
      button.dataset.mode = mode;
      button.addEventListener('click', () => open(String(vm.id), mode, vm.name || vm.vc_uuid));
      actions.appendChild(button);
    }
  }
}

function note(event) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} VM #${event.vm} ${event.event}`;
  $('events').prepend(item);
  while ($('events').children.length > 3) $('events').lastChild.remove();
  if (current && current.vm === String(event.vm)) {
    const what = { moved: 'moved by vMotion', reconnected: 'VM reconnected',
      disconnected: 'VM away (entry kept)', removed: 'VM gone' }[event.event];
    if (what) current.status(what);
  }
}

function follow() {
  const live = $('live');
  const source = new EventSource('/api/events');
  source.addEventListener('listing', (e) => {
    live.textContent = 'live';
    live.className = 'badge live-on';
    render(JSON.parse(e.data));
  });
  source.addEventListener('vm', (e) => note(JSON.parse(e.data)));
  // EventSource reconnects by itself.
  source.onerror = () => {
    live.textContent = 'reconnecting';
    live.className = 'badge live-off';
  };
}

class Console {
  constructor(vm, mode, title) {
    this.vm = vm;
    this.mode = mode;
    this.received = 0;
    this.reconnects = 0;
    this.attempt = 0;
    this.opened = false;
    this.closed = false;
    this.pending = [];
    this.pendingBytes = 0;
    this.term = new Terminal({
      scrollback: 10000,
      cursorBlink: true,
      disableStdin: mode === 'ro',
      fontFamily: 'DejaVu Sans Mono, Menlo, Consolas, monospace',
      fontSize: 14,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    $('console').hidden = false;
    $('console-title').textContent = `#${vm} ${title}`;
    $('console-mode').textContent = MODES[mode];
    this.term.open($('terminal'));
    this.fit.fit();
    this.onResize = () => this.fit.fit();
    window.addEventListener('resize', this.onResize);
    const encoder = new TextEncoder();
    this.term.onData((data) => this.send(encoder.encode(data)));
    this.term.onBinary((data) => this.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.connect();
    this.term.focus();
  }

  status(text) {
    $('console-state').textContent = text;
  }

  send(bytes) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(bytes);
    } else if (this.pendingBytes + bytes.length <= MAX_PENDING) {
      this.pending.push(bytes);
      this.pendingBytes += bytes.length;
    }
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = `vm=${encodeURIComponent(this.vm)}&mode=${this.mode}`;
    const ws = new WebSocket(`${scheme}://${location.host}/ws/terminal?${query}`);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.status('connecting');
    ws.onopen = () => {
      // A new attach replays the scrollback: start from a clean screen, not a doubled one.
      if (this.opened) {
        this.term.reset();
        this.reconnects += 1;
      }
      this.opened = true;
      this.attempt = 0;
      this.status('attached');
      for (const bytes of this.pending) ws.send(bytes);
      this.pending = [];
      this.pendingBytes = 0;
    };
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') return;
      const bytes = new Uint8Array(e.data);
      this.received += bytes.length;
      this.term.write(bytes);
    };
    ws.onclose = (e) => {
      if (this.closed || this.ws !== ws) return;
      if (FINAL.has(e.code)) {
        this.status(`closed: ${e.reason || FINAL.get(e.code)}`);
        return;
      }
      const delay = Math.min(5000, 250 * 2 ** this.attempt);
      this.attempt += 1;
      this.status(`reconnecting${e.reason ? ` (${e.reason})` : ''}`);
      setTimeout(() => { if (!this.closed && this.ws === ws) this.connect(); }, delay);
    };
  }

  // The terminal's text, wrapped lines joined (for people copying, and for automation).
  text() {
    const buffer = this.term.buffer.active;
    let out = '';
    for (let i = 0; i < buffer.length; i += 1) {
      const line = buffer.getLine(i);
      if (i > 0 && !line.isWrapped) out += '\n';
      out += line.translateToString(true);
    }
    return out;
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
    window.removeEventListener('resize', this.onResize);
    this.term.dispose();
    $('console').hidden = true;
  }
}

function open(vm, mode, title) {
  if (current) current.close();
  current = new Console(vm, mode, title || '');
  history.replaceState(null, '', `#vm=${encodeURIComponent(vm)}&mode=${mode}`);
  for (const row of $('vms').rows) {
    row.classList.toggle('selected', row.dataset.vm === vm);
  }
}

$('console-close').addEventListener('click', () => {
  if (current) current.close();
  current = null;
  history.replaceState(null, '', '#');
});

// For automation (and the tests): the open terminal's state.
window.vspc = {
  open,
  text: () => (current ? current.text() : ''),
  received: () => (current ? current.received : 0),
  status: () => (current ? $('console-state').textContent : ''),
  focus: () => current && current.term.focus(),
  // Ends the terminal's WebSocket as a network drop would (the page then reconnects).
  drop: () => current && current.ws && current.ws.close(4000, 'dropped'),
  reconnects: () => (current ? current.reconnects : 0),
};

follow();
const wanted = new URLSearchParams(location.hash.slice(1));
if (wanted.get('vm')) open(wanted.get('vm'), MODES[wanted.get('mode')] ? wanted.get('mode') : 'rw', '');
