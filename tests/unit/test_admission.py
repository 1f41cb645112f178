"""Admission of image requests: a budget of pixels beside the count, first come first served, and
a request whose client leaves while it waits gives its place up."""

import asyncio

import pytest

from anonymization_api.admission import Admission, ServiceBusy

MP = 1_000_000


async def hold(admission: Admission, pixels: int, log: list[str], name: str, release: asyncio.Event) -> None:
    async with admission.admit(None, pixels):
        log.append(name)
        await release.wait()


def test_images_run_together_only_while_their_pixels_fit_the_budget():
    async def scenario():
        admission, log = Admission(running=4, waiting=8, per_key=8, pixels=48 * MP), []
        first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(hold(admission, 36 * MP, log, "large-1", first))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(hold(admission, 36 * MP, log, "large-2", second)))
        tasks.append(asyncio.create_task(hold(admission, 1 * MP, log, "small", third)))  # fits, but came later
        await asyncio.sleep(0.01)
        waiting = list(log)
        first.set()
        await asyncio.sleep(0.01)
        after_first = list(log)
        second.set()
        third.set()
        await asyncio.gather(*tasks)
        return waiting, after_first

    waiting, after_first = asyncio.run(scenario())
    assert waiting == ["large-1"]  # the second large one waits, and the small one behind it (first come first served)
    assert after_first == ["large-1", "large-2", "small"]


def test_an_image_over_the_whole_budget_runs_alone_rather_than_never():
    async def scenario():
        admission, log = Admission(running=4, waiting=8, per_key=8, pixels=10 * MP), []
        done = asyncio.Event()
        done.set()
        await hold(admission, 36 * MP, log, "huge", done)
        return log

    assert asyncio.run(scenario()) == ["huge"]


def test_a_request_that_leaves_while_waiting_gives_its_place_up_and_a_full_wait_is_503():
    async def scenario():
        admission, log = Admission(running=1, waiting=1, per_key=8, pixels=48 * MP), []
        release = asyncio.Event()
        running = asyncio.create_task(hold(admission, MP, log, "running", release))
        await asyncio.sleep(0)
        leaving = asyncio.create_task(hold(admission, MP, log, "leaving", release))
        await asyncio.sleep(0.01)
        with pytest.raises(ServiceBusy):
            async with admission.admit(None, MP):
                pass
        leaving.cancel()
        await asyncio.sleep(0.01)
        later = asyncio.create_task(hold(admission, MP, log, "later", release))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(running, later)
        return log

    assert asyncio.run(scenario()) == ["running", "later"]
