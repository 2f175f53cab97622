"""The store overlay of one attempt, over a real LangGraph InMemoryStore: reads reach the
user's items, writes and deletes stay in the overlay, searches merge both."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from wtb.runtime.attempt import AttemptStore, GraphRuntime
from wtb.runtime.overlay import OverlayStore


def _users() -> BaseStore:
    store = InMemoryStore()
    for key in ("a", "b", "c"):
        store.put(("docs",), key, {"key": key, "kind": "user"})
    store.put(("other", "deep"), "x", {"kind": "user"})
    return store


def _keys(store: BaseStore, **kwargs: object) -> list[str]:
    return [item.key for item in store.search(("docs",), **kwargs)]


def test_reads_reach_the_users_store_and_writes_stay_in_the_overlay() -> None:
    users = _users()
    overlay = OverlayStore(users)
    item = overlay.get(("docs",), "a")
    assert item is not None
    assert item.value["kind"] == "user"
    overlay.put(("docs",), "a", {"key": "a", "kind": "mine"})
    overlay.put(("docs",), "d", {"key": "d", "kind": "mine"})
    overlay.delete(("docs",), "b")
    mine = overlay.get(("docs",), "a")
    assert mine is not None
    assert mine.value["kind"] == "mine"
    assert overlay.get(("docs",), "b") is None
    # The overlay's items first, then the user's it does not hide.
    assert _keys(overlay) == ["a", "d", "c"]
    assert _keys(overlay, limit=2, offset=1) == ["d", "c"]
    assert _keys(overlay, filter={"kind": "user"}) == ["c"]
    overlay.put(("docs",), "b", {"key": "b", "kind": "mine"})  # written again after a delete
    assert _keys(overlay, filter={"kind": "mine"}) == ["a", "d", "b"]
    overlay.put(("notes",), "n", {"kind": "mine"})
    assert overlay.list_namespaces() == [("docs",), ("notes",), ("other", "deep")]
    assert overlay.list_namespaces(max_depth=1) == [("docs",), ("notes",), ("other",)]
    # The user's store is as it was.
    assert _keys(users) == ["a", "b", "c"]
    assert all(i.value["kind"] == "user" for i in users.search(("docs",)))
    assert users.list_namespaces() == [("docs",), ("other", "deep")]


def test_the_async_operations_behave_the_same() -> None:
    users = _users()
    overlay = OverlayStore(users)

    async def go() -> list[str]:
        await overlay.aput(("docs",), "d", {"kind": "mine"})
        await overlay.adelete(("docs",), "a")
        assert await overlay.aget(("docs",), "a") is None
        return [item.key for item in await overlay.asearch(("docs",))]

    assert asyncio.run(go()) == ["d", "b", "c"]
    assert _keys(users) == ["a", "b", "c"]


def test_overlays_of_two_attempts_do_not_see_each_other() -> None:
    users = _users()
    runtime = GraphRuntime(user_store=users)
    store = AttemptStore(users)
    with runtime.attempt({}):
        store.put(("docs",), "first", {"kind": "mine"})
        assert "first" in _keys(store)
    with runtime.attempt({}):
        assert "first" not in _keys(store)
    assert "first" not in _keys(users)


def test_the_compiled_in_store_outside_an_attempt_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"GraphRuntime\.attempt"):
        AttemptStore(_users()).get(("docs",), "a")
