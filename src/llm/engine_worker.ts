/**
 * The engine worker: owns llama.cpp and runs the scheduler loop with synchronous FFI,
 * so decoding never blocks the daemon's event loop. Talks to the service by
 * postMessage; cancel and backpressure flags arrive through shared memory.
 */
/// <reference lib="deno.worker" />
import { delay } from "../protocol/async.ts";
import { availableCpus, lowerThisThread, type NativeLibs, openLibraries } from "./ffi.ts";
import { LibraryError, type LibrarySource } from "./llama_lib.ts";
import { ConfigError } from "../protocol/errors.ts";
import { Engine } from "./engine.ts";
import { ModelRequestHandler } from "./model_request_handler.ts";
import {
  CTRL_MAIL,
  ctrlWord,
  type EngineInit,
  type FromEngine,
  type ToEngine,
} from "./engine_messages.ts";

let engine: Engine | null = null;
let requests: ModelRequestHandler | null = null;
/** Embedding tokens per decode when nothing else runs. */
const EMBED_CHUNK_IDLE = 512;
let closing = false;
let wake: (() => void) | null = null;
const pending: ToEngine[] = [];

function post(msg: FromEngine) {
  self.postMessage(msg);
}

function log(level: "info" | "warn" | "error", message: string) {
  post({ op: "log", level, message });
}

/** Opens the chosen library, else (for one umad found itself) the next that loads. */
function openChosen(msg: EngineInit): { libs: NativeLibs; source: LibrarySource; reason: string } {
  const choices = msg.libraries;
  for (let i = 0;; i++) {
    try {
      return { ...choices[i], libs: openLibraries(choices[i].dir) };
    } catch (e) {
      if (i + 1 >= choices.length) throw e;
      log(
        "warn",
        `llama.cpp in ${choices[i].dir} failed to load (${(e as Error).message}); ` +
          `falling back to ${choices[i + 1].dir}`,
      );
    }
  }
}

function init(msg: EngineInit) {
  const { libs, source, reason } = openChosen(msg);
  const lib = libs.library;
  log(
    "info",
    `llama.cpp ${lib.version} from ${lib.dir} (${lib.layout} layout): backends ` +
      `${lib.backends.join(", ")}` +
      (lib.cpuVariant ? `; CPU code ${lib.cpuVariant}` : "; CPU code built in") +
      ` (${lib.cpuFeatures.join(" ")})`,
  );
  const cpus = availableCpus(libs);
  let threads = msg.threads > 0 ? msg.threads : cpus;
  if (threads > cpus) {
    // ggml's threads spin between graph nodes: more of them than CPUs makes each token
    // many times slower (shared/NATIVE.md), so a larger --threads is capped.
    log(
      "warn",
      `--threads ${threads} is more than the ${cpus} CPUs this process may use; using ${cpus}`,
    );
    threads = cpus;
  }
  // Before the thread pool exists, so its threads inherit it.
  const decodePriority = lowerThisThread(libs, msg.decodePriority);
  engine = new Engine(libs, {
    modelPath: msg.modelPath,
    ctx: msg.ctx,
    parallel: msg.parallel,
    threads,
    control: new Int32Array(msg.control),
    abort: new Uint8Array(msg.abort),
    latencyBudget: msg.latencyBudget,
    deterministic: msg.deterministic,
    prefixCache: msg.prefixCache,
    lookup: msg.lookup,
    decodePriority,
    library: {
      path: lib.dir,
      source,
      layout: lib.layout,
      backend: lib.backend,
      version: lib.version,
      backends: lib.backends,
      cpu_variant: lib.cpuVariant,
      cpu_features: lib.cpuFeatures,
      reason,
    },
    gpu: msg.gpu,
    chatTemplate: msg.chatTemplate,
    log,
    emit: (events, stats) => post({ op: "events", events, stats }),
  });
  requests = new ModelRequestHandler(engine.model, threads, post);
  engine.info.embedding_pooling = requests.embedder.pooling;
  post({ op: "ready", info: engine.info });
}

function handle(msg: ToEngine) {
  switch (msg.op) {
    case "init":
      try {
        init(msg);
      } catch (err) {
        post({
          op: "fatal",
          message: (err as Error).message,
          config: err instanceof LibraryError || err instanceof ConfigError,
        });
      }
      return;
    case "start":
      engine?.start(msg);
      return;
    case "wake":
      return;
    case "shutdown":
      closing = true;
      return;
    case "batch":
      for (const m of msg.messages) handle(m);
      return;
    case "tokenize":
    case "detokenize":
    case "embed":
    case "embed.cancel":
      if (requests) requests.handle(msg);
      else {post({
          op: "reply",
          rid: msg.rid,
          kind: "error",
          code: "E_INTERNAL",
          message: "no model",
        });}
      return;
  }
}

/**
 * Embedding tokens beside this step: what the scheduler says its latency budget leaves,
 * and one at least, so embeddings progress while prompts take the whole budget (as a
 * prompt gets a token a step at least).
 */
function spareTokens(e: Engine): number {
  return Math.max(1, Math.floor(e.spareTokens()));
}

let received = 0;
let control: Int32Array | null = null;

self.onmessage = (e: MessageEvent<ToEngine>) => {
  if (e.data.op === "init") control = new Int32Array(e.data.control);
  else received++;
  pending.push(e.data);
  wake?.();
};

/**
 * True when the main thread has posted a message this worker has not received yet.
 * Deno delivers a worker's messages only in a timer turn (a MessageChannel turn is not
 * enough in a loop of synchronous steps), and a turn costs ~0.1 ms, so a busy engine
 * takes one only when the main thread's post counter says something waits; cancel and
 * pause flags are read from shared memory without any turn.
 */
function mailWaiting(): boolean {
  if (!control) return true;
  return Atomics.load(control, ctrlWord(control, CTRL_MAIL)) !== received;
}

/** Lets the waiting messages in (a few timer turns at most). */
async function receiveMail() {
  for (let i = 0; i < 50 && mailWaiting(); i++) {
    await delay(0);
  }
}

async function loop() {
  while (true) {
    while (pending.length) handle(pending.shift()!);
    if (closing) break;
    if (engine && engine.busy) {
      engine.step();
      // Embeddings take what the step's latency budget leaves (see embedder.ts).
      if (requests?.busy) requests.step(spareTokens(engine));
      if (mailWaiting()) await receiveMail();
      continue;
    }
    if (requests?.busy) {
      requests.step(EMBED_CHUNK_IDLE);
      if (mailWaiting()) await receiveMail();
      continue;
    }
    await new Promise<void>((resolve) => (wake = resolve));
    wake = null;
  }
  if (engine) {
    engine.shutdown();
    requests?.close();
    engine.close();
  }
  post({ op: "closed" });
  self.close();
}

loop().catch((err) => {
  post({ op: "fatal", message: `Engine failed: ${(err as Error).stack ?? err}` });
});
