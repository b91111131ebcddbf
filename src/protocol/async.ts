/**
 * Small async helpers written once for the daemon, the client, the CLI and the tests:
 * {@linkcode delay}, {@linkcode deferred}, {@linkcode withTimeout}, {@linkcode backoff}
 * with {@linkcode jitter}, a queued async iterator ({@linkcode AsyncQueue}), and a
 * {@linkcode Clock} so that code whose behaviour depends on time (reconnect back-off,
 * a token bucket, a scheduler) can be tested with a {@linkcode ManualClock} instead of
 * sleeping. Runtime-neutral.
 *
 * @module
 */
import { TimeoutError } from "./errors.ts";

/** An opaque timer handle of a {@linkcode Clock}. */
export type TimerHandle = unknown;

/** Time as code that waits sees it: the system's, or a test's {@linkcode ManualClock}. */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean something). */
  now(): number;
  /** Calls `fn` once, `ms` from now. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer; unknown or fired handles are ignored. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The runtime's clock: `performance.now()` and the global timers.
 *
 * @example
 * ```ts
 * import { systemClock } from "./async.ts";
 * const t0 = systemClock.now();
 * console.log(systemClock.now() >= t0); // true
 * ```
 */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Options of {@linkcode delay}. */
export interface DelayOptions {
  /** Rejects the wait with the signal's reason when it aborts (the timer is cleared). */
  signal?: AbortSignal;
  /** Whose time to wait in (default {@linkcode systemClock}). */
  clock?: Clock;
}

/**
 * Resolves after `ms` milliseconds; rejects with `signal.reason` if the signal aborts
 * first, leaving no timer behind.
 *
 * @example
 * ```ts
 * import { delay } from "./async.ts";
 * await delay(1);
 * const stop = new AbortController();
 * const waiting = delay(60_000, { signal: stop.signal });
 * stop.abort(new Error("stopped"));
 * console.log(await waiting.catch((e) => e.message)); // stopped
 * ```
 */
export function delay(ms: number, options: DelayOptions = {}): Promise<void> {
  const { signal, clock = systemClock } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A promise with its `resolve` and `reject` (what `Promise.withResolvers` gives). */
export interface Deferred<T> {
  /** Settles when `resolve` or `reject` is called (the first call wins). */
  readonly promise: Promise<T>;
  /** Fulfils the promise. */
  resolve(value: T | PromiseLike<T>): void;
  /** Rejects the promise. */
  reject(reason: unknown): void;
}

/**
 * A promise settled from outside.
 *
 * @example
 * ```ts
 * import { deferred } from "./async.ts";
 * const ready = deferred<string>();
 * setTimeout(() => ready.resolve("up"), 1);
 * console.log(await ready.promise); // up
 * ```
 */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T | PromiseLike<T>) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Options of {@linkcode withTimeout}. */
export interface TimeoutOptions {
  /** The message of the {@linkcode TimeoutError} (default "Timed out after N ms"). */
  message?: string;
  /** Also stop waiting when this aborts (rejects with its reason). */
  signal?: AbortSignal;
  /** Whose time to count (default {@linkcode systemClock}). */
  clock?: Clock;
}

/**
 * `promise`, or a {@linkcode TimeoutError} (code `E_TIMEOUT`) if it takes longer than
 * `ms`. The timer is cleared either way. The promise itself is not cancelled: a caller
 * that owns a resource it may still produce cleans that up.
 *
 * @example
 * ```ts
 * import { delay, withTimeout } from "./async.ts";
 * console.log(await withTimeout(Promise.resolve(7), 100)); // 7
 * const slow = delay(50);
 * const err = await withTimeout(slow, 1, { message: "too slow" }).catch((e) => e);
 * console.log(err.code, err.message); // E_TIMEOUT too slow
 * await slow;
 * ```
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  options: TimeoutOptions = {},
): Promise<T> {
  const { signal, clock = systemClock } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clock.clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      done();
      reject(signal!.reason);
    };
    const timer = clock.setTimeout(() => {
      done();
      reject(new TimeoutError(options.message ?? `Timed out after ${ms} ms`));
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => {
      done();
      resolve(value);
    }, (error) => {
      done();
      reject(error);
    });
  });
}

/** An exponential back-off table. */
export interface BackoffPolicy {
  /** The first delay, ms. */
  initialDelayMs: number;
  /** The largest delay, ms. */
  maxDelayMs: number;
  /** Growth per attempt (2 doubles). */
  factor: number;
  /** Random spread of each delay, 0..1 (0.2: ±20 %); see {@linkcode jitter}. */
  jitter: number;
}

/**
 * The delay before attempt `attempt` (0-based): `initialDelayMs · factor^attempt`,
 * capped at `maxDelayMs`, then spread by {@linkcode jitter}.
 *
 * @example
 * ```ts
 * import { backoff } from "./async.ts";
 * const policy = { initialDelayMs: 50, maxDelayMs: 300, factor: 2, jitter: 0 };
 * console.log([0, 1, 2, 3, 4].map((n) => backoff(policy, n))); // [ 50, 100, 200, 300, 300 ]
 * ```
 */
export function backoff(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** attempt);
  return jitter(base, policy.jitter, random);
}

/**
 * `ms` spread uniformly by ±`spread` (0..1), so that many clients dropped at once do not
 * redial in step. `random` returns a number in [0, 1).
 *
 * @example
 * ```ts
 * import { jitter } from "./async.ts";
 * console.log(jitter(100, 0.2, () => 0), jitter(100, 0.2, () => 0.5)); // 80 100
 * ```
 */
export function jitter(ms: number, spread: number, random: () => number = Math.random): number {
  return Math.max(0, ms * (1 + spread * (2 * random() - 1)));
}

/**
 * A queue read as an async iterator: producers `push`, then `end` or `fail`; any number
 * of `next()` calls may wait at once and each gets its own value, in call order.
 * Values pushed and not yet read are delivered before the end or the error.
 *
 * @example
 * ```ts
 * import { AsyncQueue } from "./async.ts";
 * const q = new AsyncQueue<number>();
 * q.push(1);
 * q.push(2);
 * q.end();
 * const seen: number[] = [];
 * for await (const n of q) seen.push(n);
 * console.log(seen); // [ 1, 2 ]
 * ```
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  #values: T[] = [];
  #waiters: Deferred<IteratorResult<T>>[] = [];
  #ended = false;
  #error: { reason: unknown } | null = null;
  readonly #onReturn: (() => void) | undefined;

  /** `onReturn` runs once when a reader stops early (`return()` before the end). */
  constructor(onReturn?: () => void) {
    this.#onReturn = onReturn;
  }

  /** True once `end`, `fail` or `return` was called (values may still be queued). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Values pushed and not yet read. */
  get size(): number {
    return this.#values.length;
  }

  /** Adds a value (ignored after the end). */
  push(value: T): void {
    if (this.#ended) return;
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve({ value, done: false });
    else this.#values.push(value);
  }

  /** Ends the queue: readers get the queued values, then `done`. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w.resolve({ value: undefined, done: true });
  }

  /** Ends the queue with an error: readers get the queued values, then one rejection. */
  fail(reason: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    const [first, ...rest] = this.#waiters.splice(0);
    if (first) first.reject(reason);
    else this.#error = { reason };
    for (const w of rest) w.resolve({ value: undefined, done: true });
  }

  /** The next value, or `done` after the end; rejects once with the error of `fail`. */
  next(): Promise<IteratorResult<T>> {
    if (this.#values.length > 0) {
      return Promise.resolve({ value: this.#values.shift()!, done: false });
    }
    if (this.#error) {
      const { reason } = this.#error;
      this.#error = null;
      return Promise.reject(reason);
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    const waiter = deferred<IteratorResult<T>>();
    this.#waiters.push(waiter);
    return waiter.promise;
  }

  /** Stops reading: drops queued values; calls `onReturn` if the queue had not ended. */
  return(): Promise<IteratorResult<T>> {
    const early = !this.#ended;
    this.end();
    this.#values = [];
    this.#error = null;
    if (early) this.#onReturn?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** The queue itself: one reader at a time walks it with `for await`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

/**
 * A {@linkcode Clock} that moves only when told: `advance(ms)` fires the timers due, in
 * order. For testing time-dependent code without sleeping.
 *
 * @example
 * ```ts
 * import { delay, ManualClock } from "./async.ts";
 * const clock = new ManualClock();
 * let woke = false;
 * const waiting = delay(1000, { clock }).then(() => woke = true);
 * await clock.advance(999);
 * console.log(woke, clock.pending); // false 1
 * await clock.advance(1);
 * await waiting;
 * console.log(woke, clock.now()); // true 1000
 * ```
 */
export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers = new Map<number, { at: number; fn: () => void }>();

  /** A clock reading `start` ms. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** The current reading. */
  now(): number {
    return this.#now;
  }

  /** Registers `fn` to fire when the clock reaches now + `ms`. */
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  /** Forgets a timer. */
  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  /** Timers registered and not yet fired or cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** The delays (from now) of the pending timers, soonest first. */
  get pendingDelays(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  /**
   * Moves time forward by `ms`, firing each timer due in order, and lets the promise
   * reactions a fired timer starts run before the next one fires.
   */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (!due || entry[1].at < due[1].at)) due = entry;
      }
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].fn();
    }
    this.#now = end;
    await settle();
  }
}

/** Lets every pending promise reaction run: one real macrotask turn (no waiting). */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
