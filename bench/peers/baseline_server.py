"""The no-durability baseline: the shared aiohttp front, history in a dict, one AsyncOpenAI call
per turn. Everything a turn costs here is HTTP, JSON and the model call; the other systems' extra
time over it is what their durability costs."""
from __future__ import annotations

import os

import openai

from bench.peers.front import INSTRUCTIONS, MODEL, arguments, serve


def main() -> None:
    args = arguments()
    client = openai.AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"],
                                api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    threads: dict[str, list[dict]] = {}

    async def turn(thread: str, message: str, is_new: bool) -> str:
        history = threads.setdefault(thread, [])
        user = {"role": "user", "content": message}
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": INSTRUCTIONS}, *history, user])
        reply = completion.choices[0].message.content
        history += [user, {"role": "assistant", "content": reply}]
        return reply

    serve(turn, args.port)


if __name__ == "__main__":
    main()
