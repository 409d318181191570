"""Issue 13's side-by-side comparison: the same chat turn over HTTP, against the same instant
fake model, on this app (devhost) and on a no-durability baseline, LangGraph and DBOS.

`python -m bench.peers` (see bench/peers/README.md). The peers' servers run in their own venv
(requirements-bench.txt) so their dependencies never touch the app's; the load generator, the
fake model (tests/fake_openai.py) and devhost run with the app's interpreter.
"""
