"""The app's tools: every module here is imported at start (core.tools.load_tools) and each
`@tool` function in it becomes a tool the agents in agents.json may name. See core/tools.py."""
