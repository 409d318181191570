"""DBOS as its docs write a durable agent: a turn is a `@DBOS.workflow()`, the model call a
`@DBOS.step()`, the conversation read and written by datasource transactions (`@ds.transaction()`,
exactly-once and checkpointed like a step). System database and datasource are SQLite files in
WAL mode (DBOS' default SQLite journal is rollback; WAL is set once on the files before launch,
it persists in them). Async throughout: the aiohttp handler awaits the workflow function.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import openai
import sqlalchemy as sa
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig

from bench.peers.front import INSTRUCTIONS, MODEL, arguments, serve

MESSAGES = sa.table("messages", sa.column("thread"), sa.column("seq"), sa.column("role"),
                    sa.column("content"))


def wal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS messages (thread TEXT NOT NULL, seq INTEGER NOT NULL,"
               " role TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (thread, seq))")
    db.close()


def main() -> None:
    args = arguments()
    data = Path(args.data)
    system_db, app_db = data / "dbos_system.sqlite", data / "dbos_app.sqlite"
    for path in (system_db, app_db):
        wal(path)
    client = openai.AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"],
                                api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    config: DBOSConfig = {"name": "bench-peers", "system_database_url": f"sqlite:///{system_db}",
                          "run_admin_server": False, "console_log_level": "WARNING"}
    DBOS(config=config)
    state: dict = {}

    async def startup(app) -> None:
        ds = await AsyncSQLAlchemyDatasource.create(f"sqlite+aiosqlite:///{app_db}")

        @ds.transaction()
        async def load_history(thread: str) -> list[dict]:
            rows = await ds.sql_session().execute(
                sa.select(MESSAGES.c.role, MESSAGES.c.content)
                .where(MESSAGES.c.thread == thread).order_by(MESSAGES.c.seq))
            return [{"role": role, "content": content} for role, content in rows]

        @ds.transaction()
        async def save_exchange(thread: str, seq: int, message: str, reply: str) -> None:
            await ds.sql_session().execute(sa.insert(MESSAGES), [
                {"thread": thread, "seq": seq, "role": "user", "content": message},
                {"thread": thread, "seq": seq + 1, "role": "assistant", "content": reply}])

        @DBOS.step()
        async def call_model(messages: list[dict]) -> str:
            completion = await client.chat.completions.create(model=MODEL, messages=messages)
            return completion.choices[0].message.content

        @DBOS.workflow()
        async def chat_turn(thread: str, message: str) -> str:
            history = await load_history(thread)
            reply = await call_model([{"role": "system", "content": INSTRUCTIONS}, *history,
                                      {"role": "user", "content": message}])
            await save_exchange(thread, len(history), message, reply)
            return reply

        state["turn"] = chat_turn
        DBOS.launch()

    async def cleanup(app) -> None:
        DBOS.destroy()

    async def turn(thread: str, message: str, is_new: bool) -> str:
        return await state["turn"](thread, message)

    serve(turn, args.port, on_startup=[startup], on_cleanup=[cleanup])


if __name__ == "__main__":
    main()
