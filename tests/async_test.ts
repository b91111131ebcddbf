// The shared async helpers (src/protocol/async.ts), on a manual clock where time matters.
import assert from "node:assert/strict";
import {
  AsyncQueue,
  backoff,
  deferred,
  delay,
  jitter,
  ManualClock,
  withTimeout,
} from "../src/protocol/async.ts";
import { TimeoutError } from "../src/protocol/errors.ts";

Deno.test("delay waits on its clock and an abort rejects it and clears its timer", async () => {
  const clock = new ManualClock();
  let done = false;
  const waiting = delay(100, { clock }).then(() => done = true);
  await clock.advance(99);
  assert.equal(done, false);
  await clock.advance(1);
  await waiting;
  assert.equal(done, true);

  const stop = new AbortController();
  const stopped = delay(100, { clock, signal: stop.signal });
  assert.equal(clock.pending, 1);
  stop.abort(new Error("stop"));
  await assert.rejects(stopped, /stop/);
  assert.equal(clock.pending, 0);
  await assert.rejects(delay(1, { clock, signal: stop.signal }), /stop/);
});

Deno.test("withTimeout passes the value through, or rejects with TimeoutError at the deadline", async () => {
  const clock = new ManualClock();
  assert.equal(await withTimeout(Promise.resolve(3), 10, { clock }), 3);
  assert.equal(clock.pending, 0);
  await assert.rejects(withTimeout(Promise.reject(new Error("own")), 10, { clock }), /own/);
  assert.equal(clock.pending, 0);

  const never = deferred<number>();
  const slow = withTimeout(never.promise, 50, { clock, message: "too slow" });
  const failed = assert.rejects(slow, (e: unknown) => {
    return e instanceof TimeoutError && e.code === "E_TIMEOUT" && e.message === "too slow";
  });
  await clock.advance(50);
  await failed;
  assert.equal(clock.pending, 0);

  const stop = new AbortController();
  const aborted = withTimeout(never.promise, 50, { clock, signal: stop.signal });
  stop.abort(new Error("closed"));
  await assert.rejects(aborted, /closed/);
  assert.equal(clock.pending, 0);
});

Deno.test("backoff grows by its factor up to the cap; jitter spreads it within ±spread", () => {
  const policy = { initialDelayMs: 50, maxDelayMs: 1000, factor: 2, jitter: 0 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6].map((n) => backoff(policy, n)),
    [50, 100, 200, 400, 800, 1000, 1000],
  );
  const spread = { ...policy, jitter: 0.2 };
  assert.equal(backoff(spread, 1, () => 0), 80);
  assert.equal(backoff(spread, 1, () => 0.5), 100);
  assert.ok(backoff(spread, 1, () => 0.999999) < 120);
  assert.equal(jitter(10, 2, () => 0), 0, "never negative");
});

Deno.test("an AsyncQueue gives each waiting next() its own value, then the end or one error", async () => {
  const q = new AsyncQueue<number>();
  const [a, b, c] = [q.next(), q.next(), q.next()];
  q.push(1);
  q.push(2);
  q.fail(new Error("broken"));
  assert.deepEqual(await a, { value: 1, done: false });
  assert.deepEqual(await b, { value: 2, done: false });
  await assert.rejects(c, /broken/);
  assert.deepEqual(await q.next(), { value: undefined, done: true });

  // Values queued before an error are read first; the error comes once.
  const r = new AsyncQueue<string>();
  r.push("x");
  r.fail(new Error("late"));
  assert.deepEqual(await r.next(), { value: "x", done: false });
  await assert.rejects(r.next(), /late/);
  assert.deepEqual(await r.next(), { value: undefined, done: true });

  // Leaving early calls onReturn once; leaving after the end does not.
  let returned = 0;
  const s = new AsyncQueue<number>(() => returned++);
  s.push(1);
  for await (const _ of s) break;
  await s.return();
  assert.equal(returned, 1);
  const t = new AsyncQueue<number>(() => returned++);
  t.end();
  for await (const _ of t) { /* nothing */ }
  assert.equal(returned, 1);
});

Deno.test("a ManualClock fires timers in time order, those a timer sets included", async () => {
  const clock = new ManualClock(1000);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push("b@30"), 30);
  clock.setTimeout(() => {
    fired.push("a@10");
    clock.setTimeout(() => fired.push("c@15"), 5);
  }, 10);
  const cleared = clock.setTimeout(() => fired.push("never"), 20);
  clock.clearTimeout(cleared);
  assert.deepEqual(clock.pendingDelays, [10, 30]);
  await clock.advance(40);
  assert.deepEqual(fired, ["a@10", "c@15", "b@30"]);
  assert.equal(clock.now(), 1040);
  assert.equal(clock.pending, 0);
});
