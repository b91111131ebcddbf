import { UmadError } from "../client/errors.ts";
import { ConfigError, UnsafeSocketError } from "../protocol/errors.ts";
import { socketPathFor } from "../protocol/socket_path.ts";
import { UsageError } from "./_args.ts";
import { pingCommand } from "./ping.ts";
import { serveCommand, type ServiceFactory } from "./serve.ts";
import { statusCommand } from "./status.ts";
import { defaultServices } from "./services.ts";

/** One CLI command: takes its arguments, returns the exit code. */
export type Command = (args: string[]) => Promise<number>;

/** The text of `umad --help`. */
export const HELP = `umad — one local daemon for LLM generation and terminal sessions

Usage: umad <command> [options]       (umad <command> --help for each)

Commands:
  serve      run the daemon
  ping       measure the round trip to the daemon
  status     show the daemon's state and counters
  generate   stream a completion from the daemon's model
  run        start a terminal session and attach to it
  attach     attach to a terminal session (Ctrl-\\ detaches)
  ls         list terminal sessions (--watch: follow them)
  capture    print a terminal session's screen as text
  wait       wait until a terminal session shows a pattern
  kill       end a terminal session
  llama      build or add the llama.cpp libraries (native build, GPU packages)
  devices    list the compute devices llama.cpp sees (GPUs, their memory)

Exit codes: 0 ok, 1 runtime error, 2 usage or configuration error.`;

/** The commands; `serve` takes the services to run. */
function commands(makeServices: ServiceFactory = defaultServices): Record<string, Command> {
  return {
    serve: (a) => serveCommand(a, makeServices),
    ping: pingCommand,
    status: statusCommand,
    generate: async (a) => (await import("./generate.ts")).generateCommand(a),
    run: async (a) => (await import("./run.ts")).runCommand(a),
    attach: async (a) => (await import("./attach.ts")).attachCommand(a),
    ls: async (a) => (await import("./ls.ts")).lsCommand(a),
    capture: async (a) => (await import("./capture.ts")).captureCommand(a),
    wait: async (a) => (await import("./wait.ts")).waitCommand(a),
    kill: async (a) => (await import("./kill.ts")).killCommand(a),
    llama: async (a) => (await import("./llama.ts")).llamaCommand(a),
    devices: async (a) => (await import("./devices.ts")).devicesCommand(a),
  };
}

/** Runs the CLI; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    console.log(HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    console.log((await import("../version.ts")).VERSION);
    return 0;
  }
  const command = commands()[name];
  if (!command) {
    console.error(`umad: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    // Output cut short by its reader (`umad generate ... | head -c1`) is not an error.
    if (isBrokenPipe(e)) return 0;
    if (name !== "serve" && isDaemonNotRunning(e)) {
      console.error(notRunningMessage(name, rest));
      return 1;
    }
    if (e instanceof UsageError) {
      console.error(`umad ${name}: ${e.message} (see umad ${name} --help)`);
      return 2;
    }
    if (e instanceof ConfigError || e instanceof UnsafeSocketError) {
      console.error(`umad ${name}: ${e.message}`);
      return 2;
    }
    if (e instanceof UmadError) {
      console.error(`umad ${name}: ${e.message}${e.code.startsWith("E_") ? ` (${e.code})` : ""}`);
      return 1;
    }
    console.error(`umad ${name}: ${(e as Error)?.message ?? e}`);
    return 1;
  }
}

function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c = e; c !== undefined && c !== null && out.length < 8; c = (c as Error).cause) {
    out.push(c);
  }
  return out;
}

function isBrokenPipe(e: unknown): boolean {
  return causes(e).some((c) => c instanceof Deno.errors.BrokenPipe);
}

/** Connecting failed because nothing listens: no socket file, or one left by a daemon that is gone. */
function isDaemonNotRunning(e: unknown): boolean {
  return causes(e).some((c) =>
    c instanceof Deno.errors.NotFound || c instanceof Deno.errors.ConnectionRefused ||
    ["ENOENT", "ECONNREFUSED"].includes((c as { code?: string })?.code ?? "")
  );
}

function notRunningMessage(command: string, args: string[]): string {
  const flag = args.findIndex((a) => a === "--socket" || a.startsWith("--socket="));
  const explicit = flag < 0
    ? undefined
    : args[flag].startsWith("--socket=")
    ? args[flag].slice("--socket=".length)
    : args[flag + 1];
  const socket = socketPathFor(explicit, Deno.env.toObject(), Deno.uid() ?? 0);
  const serve = explicit ? `umad serve --socket ${explicit}` : "umad serve";
  return `umad ${command}: the umad daemon is not running (nothing listens on "${socket}").\n` +
    `Start it with "${serve}" in another terminal (or "${serve} &"), then run this again.`;
}
