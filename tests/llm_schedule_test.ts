/** The prefill share of a step grows only while a prompt has waited past the grace time. */
import assert from "node:assert/strict";
import { BACKLOG_GRACE_MS, BACKLOG_RAMP_MS, prefillShare } from "../src/llm/engine.ts";

Deno.test("prefill share: the configured ratio, ramping to the maximum under backlog", () => {
  assert.equal(prefillShare(0.5, 1, 0), 0.5);
  assert.equal(prefillShare(0.5, 1, BACKLOG_GRACE_MS), 0.5);
  const mid = prefillShare(0.5, 1, BACKLOG_GRACE_MS + BACKLOG_RAMP_MS / 2);
  assert.ok(mid > 0.5 && mid < 1);
  assert.equal(prefillShare(0.5, 1, BACKLOG_GRACE_MS + BACKLOG_RAMP_MS), 1);
  assert.equal(prefillShare(0.5, 1, 60_000), 1);
  assert.equal(prefillShare(1.5, 1, 60_000), 1.5); // a larger configured ratio is kept
});

Deno.test("prefill share: with no maximum above the ratio (the default) it never ramps", () => {
  for (const wait of [0, BACKLOG_GRACE_MS + 1, 60_000]) {
    assert.equal(prefillShare(0.4, 0.4, wait), 0.4);
  }
});
