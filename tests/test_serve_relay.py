"""The engine-thread → event-loop relay (``amalia_edge.serve.app._Relay``): every event of
every job arrives, in order, in its own queue, whether the loop is polling (jobs running) or
asleep (the first event wakes it); polling stops once every job has its Finished."""

from __future__ import annotations

import asyncio
import threading

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
