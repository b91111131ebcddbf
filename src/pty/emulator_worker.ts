/// <reference lib="deno.worker" />
// The terminal emulators of all sessions, in one Worker, off the relay's hot path.
// Messages arrive in order, so a snapshot, capture or barrier answers for exactly the
// bytes written before it. See emulator.ts for the message shapes, screen.ts for a screen.

import type { EmulatorReply, EmulatorRequest } from "./emulator.ts";
import { Screen } from "./screen.ts";

const screens = new Map<string, Screen>();
const encoder = new TextEncoder();

function post(reply: EmulatorReply): void {
  self.postMessage(reply);
}

self.onmessage = (e: MessageEvent<EmulatorRequest>) => {
  const m = e.data;
  if (m.op === "open") {
    const s = new Screen(m);
    s.onTitle = (title) => post({ op: "title", sid: m.sid, title });
    screens.set(m.sid, s);
    return;
  }
  const s = screens.get(m.sid);
  switch (m.op) {
    case "write": {
      const n = m.data.length;
      if (s === undefined) {
        post({ op: "ack", sid: m.sid, bytes: n, lines: 0 });
        break;
      }
      s.write(m.data, (matched) => {
        post({ op: "ack", sid: m.sid, bytes: n, lines: s.lines });
        for (const [wid, text] of matched) post({ op: "waited", wid, matched: true, text });
      });
      break;
    }
    case "resize":
      s?.resize(m.cols, m.rows);
      break;
    case "snapshot":
      if (s === undefined) {
        post({ op: "snapshot", req: m.req, data: new Uint8Array(0), cols: 0, rows: 0 });
        break;
      }
      s.after(() => {
        const data = encoder.encode(s.snapshot());
        post({ op: "snapshot", req: m.req, data, cols: s.term.cols, rows: s.term.rows });
      });
      break;
    case "capture":
      if (s === undefined) {
        post({ op: "capture", req: m.req, data: "", cols: 0, rows: 0, cursor: { x: 0, y: 0 } });
        break;
      }
      s.after(() => post({ op: "capture", req: m.req, ...s.capture(m.format, m.start, m.end) }));
      break;
    case "wait":
      if (s === undefined) {
        post({ op: "waited", wid: m.wid, matched: false });
        break;
      }
      s.after(() => {
        const r = s.addWait(m.wid, m.pattern, m.regex);
        if (r.matched) post({ op: "waited", wid: m.wid, matched: true, text: r.text });
      });
      break;
    case "unwait":
      s?.removeWait(m.wid);
      break;
    case "barrier":
      if (s === undefined) post({ op: "barrier", req: m.req });
      else s.after(() => post({ op: "barrier", req: m.req }));
      break;
    case "close":
      screens.delete(m.sid);
      s?.dispose();
      break;
  }
};
