"""What one test leaves behind does not fail another."""

from __future__ import annotations

import asyncio
import gc

from mitmproxy.test import taddons


async def never_finishing() -> None:
    await asyncio.Event().wait()


def test_a_task_left_pending_on_a_closed_loop_fails_no_test_that_uses_addon_contexts_in_turn() -> None:
    abandoned = asyncio.new_event_loop()
    task = abandoned.create_task(never_finishing())
    abandoned.close()
    with taddons.context():
        pass
    with taddons.context():
        pass
    del task
    gc.collect()
