"""Plain Python shared by the app's functions: agents, thread ids, conversation state.

Nothing here imports azure.functions, so it is unit-tested on its own."""
