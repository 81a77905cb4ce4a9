// KurrentDB's Node.js client (@kurrent/kurrentdb-client) against `foldstore serve`.
//
// Usage: node node_client.mjs kurrentdb://127.0.0.1:PORT?tls=false
// Appends (with a wrong expected revision), reads forwards and backwards, reads $all,
// subscribes to $all with a filter and to a stream (history, then live), deletes,
// tombstones, sets and gets stream metadata, and drives a persistent subscription
// (create, read, ack, nack-park, replay parked, list, get info, delete). Exits non-zero
// on the first failure.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(process.env.KURRENT_NODE_MODULES + "/");
const {
  KurrentDBClient, jsonEvent, streamNameFilter, ANY, NO_STREAM, BACKWARDS, END, START, PARK,
  ROUND_ROBIN, persistentSubscriptionToStreamSettingsFromDefaults,
  WrongExpectedVersionError, StreamNotFoundError, StreamDeletedError,
  PersistentSubscriptionDoesNotExistError,
} = require("@kurrent/kurrentdb-client");

const client = KurrentDBClient.connectionString(process.argv[2]);
const run = randomUUID().slice(0, 8);
const stream = `node${run}-account-1`;
const event = (type, n) => jsonEvent({ type, data: { n } });

async function collect(iterable) {
  const out = [];
  for await (const resolved of iterable) out.push(resolved.event);
  return out;
}

// Appends (BatchAppend when the server lists it, as here).
await client.appendToStream(stream, [event("Opened", 0)], { streamState: NO_STREAM });
await client.appendToStream(stream, [event("Deposited", 1), event("Deposited", 2)], { streamState: 0n });
await assert.rejects(
  client.appendToStream(stream, [event("Late", 9)], { streamState: 0n }),
  WrongExpectedVersionError,
);

// Reads forwards and backwards.
const forwards = await collect(client.readStream(stream));
assert.deepEqual(forwards.map((e) => e.revision), [0n, 1n, 2n]);
const backwards = await collect(client.readStream(stream, { direction: BACKWARDS, fromRevision: END, maxCount: 2 }));
assert.deepEqual(backwards.map((e) => e.revision), [2n, 1n]);

// $all.
const all = (await collect(client.readAll())).filter((e) => e?.streamId === stream);
assert.equal(all.length, 3);

// A filtered $all subscription: history, then a live event.
{
  const subscription = client.subscribeToAll({ filter: streamNameFilter({ prefixes: [`node${run}-`] }) });
  const seen = [];
  for await (const resolved of subscription) {
    seen.push(resolved.event.revision);
    if (seen.length === 3) await client.appendToStream(stream, [event("Live", 3)], { streamState: 2n });
    if (seen.length === 4) break;
  }
  await subscription.unsubscribe();
  assert.deepEqual(seen, [0n, 1n, 2n, 3n]);
}

// A stream subscription: history, then live.
{
  const subscription = client.subscribeToStream(stream);
  const seen = [];
  for await (const resolved of subscription) {
    seen.push(resolved.event.revision);
    if (seen.length === 4) await client.appendToStream(stream, [event("Live", 4)], { streamState: 3n });
    if (seen.length === 5) break;
  }
  await subscription.unsubscribe();
  assert.deepEqual(seen, [0n, 1n, 2n, 3n, 4n]);
}

// Stream metadata.
await client.setStreamMetadata(stream, { maxCount: 2, owner: "billing" });
const { metadata } = await client.getStreamMetadata(stream);
assert.equal(metadata.maxCount, 2);
assert.equal(metadata.owner, "billing");
assert.deepEqual((await collect(client.readStream(stream))).map((e) => e.revision), [3n, 4n]);

// Soft delete: reads say not found; a later append continues the revisions.
await client.deleteStream(stream, { streamState: 4n });
await assert.rejects(collect(client.readStream(stream)), StreamNotFoundError);
await client.appendToStream(stream, [event("Reopened", 5)], { streamState: ANY });

// Tombstone: appends fail as deleted.
const gone = `node${run}-gone-1`;
await client.appendToStream(gone, [event("Opened", 0)], { streamState: NO_STREAM });
await client.tombstoneStream(gone, { streamState: 0n });
await assert.rejects(client.appendToStream(gone, [event("Again", 1)]), StreamDeletedError);

// A persistent subscription. The client names the stream of a new group the older way
// (the start in the settings' revision) and uses gRPC for list, info and replay because
// the server lists those calls with the feature `stream`.
{
  const orders = `node${run}-orders-1`;
  const eventually = async (what, check) => {
    for (let i = 0; i < 250; i++) {
      if (await check()) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const info = () => client.getPersistentSubscriptionToStreamInfo(orders, "workers");
  await client.appendToStream(orders, [0, 1, 2].map((n) => event("Placed", n)), { streamState: NO_STREAM });
  await client.createPersistentSubscriptionToStream(
    orders,
    "workers",
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START }),
  );
  const subscription = client.subscribeToPersistentSubscriptionToStream(orders, "workers");
  const seen = [];
  for await (const resolved of subscription) {
    const revision = resolved.event.revision;
    seen.push(revision);
    // Park 1 the first time; ack everything else.
    if (revision === 1n && seen.length === 2) {
      await subscription.nack(PARK, "cannot process", resolved);
    } else {
      await subscription.ack(resolved);
    }
    if (seen.length === 3) {
      await eventually("one parked event", async () => (await info()).stats.parkedMessageCount === 1n);
      await client.replayParkedMessagesToStream(orders, "workers");
    }
    if (seen.length === 4) break;
  }
  await subscription.unsubscribe();
  assert.deepEqual(seen, [0n, 1n, 2n, 1n], "the parked event comes back on replay");
  await eventually("the replayed event acked", async () => (await info()).stats.parkedMessageCount === 0n);

  const listed = await client.listPersistentSubscriptionsToStream(orders);
  assert.deepEqual(listed.map((s) => s.groupName), ["workers"]);
  const all = (await client.listAllPersistentSubscriptions()).filter((s) => s.eventSource === orders);
  assert.equal(all.length, 1);
  const details = await info();
  assert.equal(details.eventSource, orders);
  assert.equal(details.settings.startFrom, START);
  assert.equal(details.settings.consumerStrategyName, ROUND_ROBIN);
  assert.equal(details.stats.totalItems, 4n);

  await client.deletePersistentSubscriptionToStream(orders, "workers");
  await assert.rejects(info(), PersistentSubscriptionDoesNotExistError);
  assert.deepEqual(await client.listPersistentSubscriptionsToStream(orders), []);
}

await client.dispose();
console.log("node @kurrent/kurrentdb-client: ok");
