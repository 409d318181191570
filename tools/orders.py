"""A small shop's orders (tools/data/orders.json, shipped with the app): look one up, search
them, and refund one. `refund_order` has a visible side effect, so agents list it in
`require_approval`, and it is idempotent on its call id.

Refunds go to a JSON-lines ledger in TOOLS_DATA_DIR (default `.devhost/tools` in the app
folder, the temp folder if that is read-only, e.g. on Azure): `refunds.jsonl` holds each refund
once (keyed by the tool call id), `refund_attempts.jsonl` one line per execution, so a re-run
after a crash is visible but never pays twice.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from core.tools import APPROVAL, tool

DATA_FILE = Path(__file__).resolve().parent / "data" / "orders.json"
APP_ROOT = Path(__file__).resolve().parent.parent
Status = Literal["processing", "shipped", "delivered", "cancelled"]


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def _orders() -> list[dict]:
    return _catalogue()["orders"]


def _total(order: dict) -> float:
    return round(sum(item["qty"] * item["price"] for item in order["items"]), 2)


def _find(order_id: str) -> dict | None:
    wanted = order_id.strip().upper()
    return next((o for o in _orders() if o["id"] == wanted), None)


def data_dir() -> Path:
    """Where the ledger lives (TOOLS_DATA_DIR, else .devhost/tools, else the temp folder)."""
    configured = os.environ.get("TOOLS_DATA_DIR")
    candidates = [Path(configured)] if configured else [
        APP_ROOT / ".devhost" / "tools", Path(tempfile.gettempdir()) / "durable-agent-tools"]
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            if configured:
                raise
    raise OSError(f"no writable folder for the tools' data among {candidates}")


def read_ledger(name: str = "refunds.jsonl") -> list[dict]:
    """Every line of a ledger file (refunds.jsonl or refund_attempts.jsonl)."""
    path = data_dir() / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@contextmanager
def _locked(path: Path):
    """An exclusive OS lock on the ledger: parallel calls (threads or processes) queue."""
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _summary(order: dict) -> dict:
    return {"id": order["id"], "customer": order["customer"], "status": order["status"],
            "placed_at": order["placed_at"], "total": _total(order),
            "currency": _catalogue()["currency"], "items": len(order["items"])}


@tool
def lookup_order(order_id: str) -> dict:
    """Look up one order by its id: customer, status, items, total and refunds so far.

    Args:
        order_id: the order id, e.g. "A1002".
    """
    order = _find(order_id)
    if order is None:
        return {"found": False, "order_id": order_id,
                "message": f"there is no order {order_id!r}"}
    refunded = sum(r["amount"] for r in read_ledger() if r["order_id"] == order["id"])
    return {"found": True, **order, "total": _total(order), "currency": _catalogue()["currency"],
            "refunded": round(refunded, 2)}


@tool
def search_orders(query: str = "", status: Optional[Status] = None, limit: int = 5) -> dict:
    """Search orders by customer name, e-mail, product name or SKU, optionally by status.

    Args:
        query: words to look for (case-insensitive); empty matches every order.
        status: only orders in this status.
        limit: at most this many orders (1-20), newest first.
    """
    words = query.lower().split()
    found = []
    for order in _orders():
        text = " ".join([order["id"], order["customer"], order["email"]] +
                        [f"{i['sku']} {i['name']}" for i in order["items"]]).lower()
        if all(w in text for w in words) and (status is None or order["status"] == status):
            found.append(order)
    found.sort(key=lambda o: o["placed_at"], reverse=True)
    limit = max(1, min(int(limit), 20))
    return {"count": len(found), "orders": [_summary(o) for o in found[:limit]]}


@tool(requires=APPROVAL, max_attempts=3)
def refund_order(order_id: str, amount: float, reason: str, idempotency_key: str = "") -> dict:
    """Refund (part of) an order to the customer. Needs a person's approval.

    Args:
        order_id: the order to refund, e.g. "A1001".
        amount: how much to refund, in the order's currency; at most what is left to refund.
        reason: why, in a few words (kept in the refund ledger).
    """
    directory = data_dir()
    ledger, attempts = directory / "refunds.jsonl", directory / "refund_attempts.jsonl"
    key = idempotency_key or f"no-key-{time.time_ns()}"
    with _locked(ledger):
        _append(attempts, {"key": key, "order_id": order_id, "amount": amount,
                           "at": time.time(), "pid": os.getpid()})
        previous = next((r for r in read_ledger() if r["key"] == key), None)
        if previous is not None:  # this call already refunded: say so again, pay nothing
            return {**previous, "duplicate": True}
        order = _find(order_id)
        if order is None:
            return {"refunded": False, "order_id": order_id,
                    "message": f"there is no order {order_id!r}"}
        if order["status"] == "cancelled":
            return {"refunded": False, "order_id": order["id"],
                    "message": "the order was cancelled; nothing was charged"}
        already = sum(r["amount"] for r in read_ledger() if r["order_id"] == order["id"])
        left = round(_total(order) - already, 2)
        if amount <= 0 or amount > left:
            return {"refunded": False, "order_id": order["id"], "refundable": left,
                    "message": f"the amount must be more than 0 and at most {left}"}
        record = {"refunded": True, "key": key, "refund_id": f"R-{order['id']}-{key[-8:]}",
                  "order_id": order["id"], "amount": round(amount, 2),
                  "currency": _catalogue()["currency"], "reason": reason, "at": time.time()}
        _append(ledger, record)
    return {**record, "duplicate": False}
