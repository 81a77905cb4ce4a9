"""KurrentDB's Python client (kurrentdbclient) against `foldstore serve`.

Usage: python_client.py kurrentdb://127.0.0.1:PORT?tls=false
Appends (with a wrong expected revision), reads forwards and backwards, reads $all,
subscribes to $all with a filter and to a stream (history, then live), deletes,
tombstones, sets and gets stream metadata, and drives a persistent subscription
(create, read, ack, nack-park, replay parked, list, get info, delete). Exits non-zero
on the first failure.
"""

import sys
import time
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)


def event(kind, n):
    return NewEvent(type=kind, data=b'{"n": %d}' % n)


def main(uri):
    client = KurrentDBClient(uri=uri)
    run = uuid.uuid4().hex[:8]
    stream = f"py{run}-account-1"

    # Append: one event (Append), then several (BatchAppend).
    client.append_to_stream(stream, events=event("Opened", 0), current_version=StreamState.NO_STREAM)
    client.append_to_stream(stream, events=[event("Deposited", n) for n in (1, 2)], current_version=0)
    try:
        client.append_to_stream(stream, events=event("Late", 9), current_version=0)
        raise AssertionError("a wrong expected revision was accepted")
    except WrongCurrentVersionError:
        pass
    assert client.get_current_version(stream) == 2

    # Reads forwards and backwards.
    forwards = [e.stream_position for e in client.get_stream(stream)]
    assert forwards == [0, 1, 2], forwards
    backwards = [e.stream_position for e in client.get_stream(stream, backwards=True, limit=2)]
    assert backwards == [2, 1], backwards

    # $all, filtered to this run's streams.
    ours = [e for e in client.read_all(filter_include=[f"py{run}-"], filter_by_stream_name=True, filter_by_prefix=True)]
    assert [e.stream_name for e in ours] == [stream] * 3, ours

    # A filtered $all subscription: history, then a live event.
    sub = client.subscribe_to_all(filter_include=[f"py{run}-"], filter_by_stream_name=True, filter_by_prefix=True)
    seen = []
    for e in sub:
        seen.append(e.stream_position)
        if len(seen) == 3:
            client.append_to_stream(stream, events=event("Live", 3), current_version=2)
        if len(seen) == 4:
            break
    sub.stop()
    assert seen == [0, 1, 2, 3], seen

    # A stream subscription: history, then live.
    sub = client.subscribe_to_stream(stream)
    seen = []
    for e in sub:
        seen.append(e.stream_position)
        if len(seen) == 4:
            client.append_to_stream(stream, events=event("Live", 4), current_version=3)
        if len(seen) == 5:
            break
    sub.stop()
    assert seen == [0, 1, 2, 3, 4], seen

    # Stream metadata.
    client.set_stream_metadata(stream, metadata={"$maxCount": 2, "owner": "billing"}, current_version=StreamState.NO_STREAM)
    metadata, version = client.get_stream_metadata(stream)
    assert metadata == {"$maxCount": 2, "owner": "billing"} and version == 0, (metadata, version)
    assert [e.stream_position for e in client.get_stream(stream)] == [3, 4]

    # Soft delete: reads say not found; a later append continues the revisions.
    client.delete_stream(stream, current_version=4)
    try:
        list(client.get_stream(stream))
        raise AssertionError("a deleted stream was read")
    except NotFoundError:
        pass
    client.append_to_stream(stream, events=event("Reopened", 5), current_version=StreamState.ANY)

    # Tombstone: reads and appends fail as deleted.
    gone = f"py{run}-gone-1"
    client.append_to_stream(gone, events=event("Opened", 0), current_version=StreamState.NO_STREAM)
    client.tombstone_stream(gone, current_version=0)
    try:
        client.append_to_stream(gone, events=event("Again", 1), current_version=StreamState.ANY)
        raise AssertionError("a tombstoned stream took an append")
    except StreamIsDeletedError:
        pass
    except FailedPreconditionError as e:
        # The client maps a one-event append's deleted-stream status by its message.
        assert "is deleted" in str(e), e

    persistent_subscription(client, run)
    client.close()
    print("python kurrentdbclient: ok")


def eventually(what, check):
    for _ in range(250):
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def persistent_subscription(client, run):
    stream = f"py{run}-orders-1"
    client.append_to_stream(stream, events=[event("Placed", n) for n in range(3)], current_version=StreamState.NO_STREAM)
    # From the start of the stream (the client's defaults: DispatchToSingle, 5 consumers at most).
    client.create_subscription_to_stream("workers", stream)

    # Read: ack 0 and 2, park 1; the client acks in batches.
    sub = client.read_subscription_to_stream("workers", stream)
    assert sub.subscription_id == f"{stream}::workers", sub.subscription_id
    for e in sub:
        assert e.retry_count == 0, e
        if e.stream_position == 1:
            sub.nack(e, action="park")
        else:
            sub.ack(e)
        if e.stream_position == 2:
            break
    eventually("one parked event", lambda: client.get_subscription_info("workers", stream).parked_message_count == 1)

    # Replayed, the parked event comes again.
    client.replay_parked_events("workers", stream)
    again = next(sub)
    assert again.stream_position == 1, again
    sub.ack(again)
    eventually("the parked event acked", lambda: client.get_subscription_info("workers", stream).parked_message_count == 0)
    sub.stop()

    # List and get info.
    ours = [s for s in client.list_subscriptions() if s.event_source == stream]
    assert [s.group_name for s in ours] == ["workers"], ours
    assert [s.group_name for s in client.list_subscriptions_to_stream(stream)] == ["workers"]
    info = client.get_subscription_info("workers", stream)
    assert info.consumer_strategy == "DispatchToSingle", info
    assert info.max_subscriber_count == 5, info
    assert info.start_from == "0", info
    assert info.total_items == 4, info

    # Delete: the group is gone.
    client.delete_subscription("workers", stream)
    try:
        client.get_subscription_info("workers", stream)
        raise AssertionError("a deleted group answered")
    except NotFoundError:
        pass
    assert client.list_subscriptions_to_stream(stream) == []


if __name__ == "__main__":
    main(sys.argv[1])
