/// <reference lib="deno.worker" />
// The terminal emulators of all sessions, in one Worker, off the relay's hot path.
// Messages arrive in order, so a snapshot request answers for exactly the bytes written
// before it. See emulator.ts for the message shapes.

import xtermHeadless from "@xterm/headless";
import serializeAddon from "@xterm/addon-serialize";
import type { EmulatorReply, EmulatorRequest } from "./emulator.ts";

const { Terminal } = xtermHeadless;
const { SerializeAddon } = serializeAddon;

interface Screen {
  term: InstanceType<typeof Terminal>;
  serializer: InstanceType<typeof SerializeAddon>;
  scrollback: number;
}

const screens = new Map<string, Screen>();
const encoder = new TextEncoder();

function post(reply: EmulatorReply): void {
  self.postMessage(reply);
}

self.onmessage = (e: MessageEvent<EmulatorRequest>) => {
  const m = e.data;
  switch (m.op) {
    case "open": {
      const term = new Terminal({
        cols: m.cols,
        rows: m.rows,
        scrollback: m.scrollback,
        allowProposedApi: true,
        logLevel: "off",
      });
      const serializer = new SerializeAddon();
      term.loadAddon(serializer);
      screens.set(m.sid, { term, serializer, scrollback: m.scrollback });
      break;
    }
    case "write": {
      const s = screens.get(m.sid);
      const n = m.data.length;
      if (s === undefined) {
        post({ op: "ack", sid: m.sid, bytes: n });
        break;
      }
      s.term.write(m.data, () => post({ op: "ack", sid: m.sid, bytes: n }));
      break;
    }
    case "resize": {
      const s = screens.get(m.sid);
      // Resize after the writes before it have been parsed.
      s?.term.write(new Uint8Array(0), () => s.term.resize(m.cols, m.rows));
      break;
    }
    case "snapshot": {
      const s = screens.get(m.sid);
      if (s === undefined) {
        post({ op: "snapshot", req: m.req, data: new Uint8Array(0), cols: 0, rows: 0 });
        break;
      }
      s.term.write(new Uint8Array(0), () => {
        const text = s.serializer.serialize({ scrollback: s.scrollback });
        post({
          op: "snapshot",
          req: m.req,
          data: encoder.encode(text),
          cols: s.term.cols,
          rows: s.term.rows,
        });
      });
      break;
    }
    case "close": {
      const s = screens.get(m.sid);
      screens.delete(m.sid);
      s?.term.write(new Uint8Array(0), () => s.term.dispose());
      break;
    }
  }
};
