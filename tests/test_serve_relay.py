"""The engine-thread → event-loop relay (``amalia_edge.serve.app._Relay``): every event of
every job arrives, in order, in its own queue, whether the loop is polling (jobs running) or
asleep (the first event wakes it); polling stops once every job has its Finished."""

from __future__ import annotations

import asyncio
import threading
import time

from amalia_edge.runtime.events import Finished, TokenEvent
from amalia_edge.serve.app import _Relay


def _finished(n: int) -> Finished:
    return Finished(
        reason="length",
        text="",
        prompt_tokens=1,
        completion_tokens=n,
        t_start=0.0,
        t_first_token=None,
        t_end=0.0,
        prompt_seconds=0.0,
    )


def _token(i: int) -> TokenEvent:
    return TokenEvent(token_id=i, text=f"t{i}", t=float(i), index=i)


async def _run_jobs(relay: _Relay, jobs: int, tokens: int) -> list[list[int]]:
    queues: list[asyncio.Queue] = [asyncio.Queue() for _ in range(jobs)]
    for _ in range(jobs):
        relay.register()

    def produce() -> None:  # as the engine thread does: interleaved jobs, one token per step
        for i in range(tokens):
            for q in queues:
                relay.put(q, _token(i))
        for q in queues:
            relay.put(q, _finished(tokens))

    thread = threading.Thread(target=produce)
    thread.start()
    got: list[list[int]] = []
    for q in queues:
        ids = []
        while not isinstance(ev := await asyncio.wait_for(q.get(), 10), Finished):
            ids.append(ev.token_id)
        got.append(ids)
    thread.join()
    return got


def test_relay_delivers_every_event_in_order_and_stops_polling() -> None:
    async def main() -> None:
        relay = _Relay(asyncio.get_running_loop())
        got = await _run_jobs(relay, jobs=4, tokens=500)
        assert got == [list(range(500))] * 4
        assert relay.active == 0
        await asyncio.sleep(0.05)  # the last tick sees no job and stops the timer
        assert not relay.polling
        # Asleep now: a lone event (no job registered) still arrives, through a wake-up.
        q: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=relay.put, args=(q, _token(7))).start()
        ev = await asyncio.wait_for(q.get(), 10)
        assert ev.token_id == 7
        # And a second round after polling stopped works as the first.
        assert await _run_jobs(relay, jobs=2, tokens=50) == [list(range(50))] * 2

    asyncio.run(main())


def test_relay_does_not_keep_its_loop_alive() -> None:
    import gc
    import weakref

    from amalia_edge.serve.app import _relay, _relays

    async def make() -> None:
        _relay()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(make())
    assert loop in _relays
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None


def _paced(relay: _Relay, q: asyncio.Queue, tokens: int, gap_s: float) -> threading.Thread:
    """An engine thread producing one event every ``gap_s`` (a model's step time)."""

    def produce() -> None:
        for i in range(tokens):
            time.sleep(gap_s)
            relay.put(q, _token(i))
        relay.put(q, _finished(tokens))

    return threading.Thread(target=produce)


async def _collect(q: asyncio.Queue) -> list[int]:
    ids = []
    while not isinstance(ev := await asyncio.wait_for(q.get(), 10), Finished):
        ids.append(ev.token_id)
    return ids


def test_relay_slow_steps_wake_the_loop_instead_of_polling() -> None:
    """Steps of 15 ms (a real model on a CPU or a Jetson): the loop must not tick every
    millisecond between them (each tick takes a core from llama.cpp's threads); each event
    wakes it, and a couple of empty ticks later it stops polling again."""

    async def main() -> None:
        relay = _Relay(asyncio.get_running_loop())
        q: asyncio.Queue = asyncio.Queue()
        relay.register()
        tokens = 20
        thread = _paced(relay, q, tokens, 0.015)
        thread.start()
        ids = await _collect(q)
        thread.join()
        assert ids == list(range(tokens))
        # polling every 1 ms for 20 x 15 ms would be ~300 ticks; one or two per step here
        assert relay.ticks <= 3 * (tokens + 1), relay.ticks
        assert relay.wakes >= tokens // 2, relay.wakes

    asyncio.run(main())


def test_relay_fast_steps_are_polled_not_woken() -> None:
    """Steps far shorter than POLL_S (the demo model at ~2,000 tokens/s): the loop keeps
    polling, and the engine thread wakes it only a few times for hundreds of events."""

    async def main() -> None:
        relay = _Relay(asyncio.get_running_loop())
        q: asyncio.Queue = asyncio.Queue()
        relay.register()
        tokens = 3000

        def produce() -> None:  # bursts of 10 events with short pauses, far under POLL_S
            for i in range(tokens):
                relay.put(q, _token(i))
                if i % 10 == 9:
                    time.sleep(0.0002)
            relay.put(q, _finished(tokens))

        thread = threading.Thread(target=produce)
        thread.start()
        ids = await _collect(q)
        thread.join()
        assert ids == list(range(tokens))
        # a wake-up per burst would be 300; polling throughout, a handful
        assert relay.wakes <= tokens // 30, relay.wakes

    asyncio.run(main())
