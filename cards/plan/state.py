"""The plan's one write buffer: users and orders read once, changed in place, written together.

The engine reads and changes records through a `PlanState`; nothing reaches storage until its
owner takes `puts()` (one `Batch` in cards/orders.py, so a whole apply round lands atomically)
or, for `MemoryPlanState` (tests, `ledger rebuild`), reads `users`/`orders`. The engine checks
every refusal before it changes anything, so a refused event leaves the buffer as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from cards.plan.records import JSONDict, OrderRecord, UserNode

NS_USER = "plan.user"
NS_ORDER = "plan.order"

_R = TypeVar("_R", bound=BaseModel)

# (namespace, key) -> the stored document, or None.
Loader = Callable[[str, str], JSONDict | None]


def _nothing(_ns: str, _key: str) -> JSONDict | None:
    return None


class PlanState:
    """Users and orders of the plan, loaded at most once each, with the changed ones marked."""

    def __init__(self, load: Loader = _nothing) -> None:
        self._load = load
        self._users: dict[str, UserNode | None] = {}
        self._orders: dict[str, OrderRecord | None] = {}
        # The changed records, in first-change order (the order their writes go out in).
        self._dirty_users: dict[str, UserNode] = {}
        self._dirty_orders: dict[str, OrderRecord] = {}

    def get_user(self, user_id: str) -> UserNode | None:
        """Return the user (the buffered object: changes to it need `put_user`), or None."""
        return self._get(self._users, NS_USER, user_id, UserNode)

    def user(self, user_id: str) -> UserNode:
        """Return the user, a new member if never seen (written only once `put_user`)."""
        node = self.get_user(user_id)
        if node is None:
            node = self._users[user_id] = UserNode(user_id=user_id)
        return node

    def put_user(self, user: UserNode) -> None:
        """Buffer the user as changed."""
        self._users[user.user_id] = user
        self._dirty_users[user.user_id] = user

    def get_order(self, order_id: str) -> OrderRecord | None:
        """Return the order (the buffered object), or None."""
        return self._get(self._orders, NS_ORDER, order_id, OrderRecord)

    def _get(self, cache: dict[str, _R | None], ns: str, key: str, model: type[_R]
             ) -> _R | None:
        if key not in cache:
            doc = self._load(ns, key)
            cache[key] = None if doc is None else model.model_validate(doc)
        return cache[key]

    def put_order(self, order: OrderRecord) -> None:
        """Buffer the order as changed."""
        self._orders[order.order_id] = order
        self._dirty_orders[order.order_id] = order

    def changed_users(self) -> dict[str, JSONDict]:
        """Return the changed users as stored documents, by user id."""
        return {k: v.model_dump(mode="json") for k, v in self._dirty_users.items()}

    def changed_orders(self) -> dict[str, JSONDict]:
        """Return the changed orders as stored documents, by order id."""
        return {k: v.model_dump(mode="json") for k, v in self._dirty_orders.items()}

    def puts(self) -> list[tuple[str, str, JSONDict]]:
        """Return the buffered writes as `Batch.puts`."""
        out = [(NS_USER, k, v) for k, v in self.changed_users().items()]
        out += [(NS_ORDER, k, v) for k, v in self.changed_orders().items()]
        return out


class MemoryPlanState(PlanState):
    """A `PlanState` over nothing: everything it holds is what was put (tests, replays)."""

    @property
    def users(self) -> dict[str, JSONDict]:
        """Return every user put, as stored documents."""
        return self.changed_users()

    @property
    def orders(self) -> dict[str, JSONDict]:
        """Return every order put, as stored documents."""
        return self.changed_orders()
