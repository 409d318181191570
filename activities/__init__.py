"""Durable activities of the chat-agent service.

Kept import-free on purpose: ``activities.errors`` is pure and is imported by
orchestrator code, which should not pull in openai, azure-identity or
llama.cpp. Register the activity with
``from activities.llm import bp; app.register_functions(bp)``.
"""
