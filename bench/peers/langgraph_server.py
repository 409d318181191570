"""LangGraph 1.x as its docs write a chat agent: a StateGraph over MessagesState with one node
calling a ChatOpenAI model, compiled with a SQLite checkpointer; the thread id goes in
`config["configurable"]["thread_id"]` and the checkpointer restores the history.

Variants: `async` (default: AsyncSqliteSaver + `ainvoke`, what an asyncio server uses) and
`sync` (SqliteSaver on one `check_same_thread=False` connection + `invoke` in the loop's
default thread pool, the docs' synchronous form).
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph

from bench.peers.front import INSTRUCTIONS, MODEL, arguments, serve


def build_graph(model: ChatOpenAI, is_async: bool) -> StateGraph:
    if is_async:
        async def call_model(state: MessagesState):
            return {"messages": [await model.ainvoke(
                [SystemMessage(INSTRUCTIONS), *state["messages"]])]}
    else:
        def call_model(state: MessagesState):
            return {"messages": [model.invoke([SystemMessage(INSTRUCTIONS), *state["messages"]])]}
    builder = StateGraph(MessagesState)
    builder.add_node("call_model", call_model)
    builder.add_edge(START, "call_model")
    return builder


def main() -> None:
    args = arguments()
    is_async = args.variant != "sync"
    model = ChatOpenAI(model=MODEL, base_url=os.environ["OPENAI_BASE_URL"],
                       api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    builder = build_graph(model, is_async)
    path = str(Path(args.data) / "checkpoints.sqlite")
    state: dict = {}

    async def startup(app) -> None:
        if is_async:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
            state["saver_cm"] = AsyncSqliteSaver.from_conn_string(path)
            saver = await state["saver_cm"].__aenter__()
        else:
            from langgraph.checkpoint.sqlite import SqliteSaver
            saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
        state["graph"] = builder.compile(checkpointer=saver)

    async def cleanup(app) -> None:
        if "saver_cm" in state:
            await state["saver_cm"].__aexit__(None, None, None)

    async def turn(thread: str, message: str, is_new: bool) -> str:
        config = {"configurable": {"thread_id": thread}}
        inputs = {"messages": [HumanMessage(message)]}
        if is_async:
            result = await state["graph"].ainvoke(inputs, config)
        else:
            result = await asyncio.get_running_loop().run_in_executor(
                None, lambda: state["graph"].invoke(inputs, config))
        return result["messages"][-1].content

    serve(turn, args.port, on_startup=[startup], on_cleanup=[cleanup])


if __name__ == "__main__":
    main()
