"""MCP tool triggers written for Azure, as the Functions docs show them: devhost must hand them
the same input (the extension's context JSON) and read their results the same way."""
import json

import azure.functions as func

app = func.FunctionApp()


@app.mcp_tool()
@app.mcp_tool_property(arg_name="name", description="Who to greet.")
def greet(name: str, times: int = 1) -> str:
    """Greets someone."""
    return " ".join([f"Hello, {name}!"] * times)


@app.mcp_tool_trigger(arg_name="context", tool_name="echo_context",
                      description="Returns the context the extension sent.",
                      tool_properties=json.dumps([{"propertyName": "text",
                                                   "propertyType": "string",
                                                   "description": "anything",
                                                   "isRequired": True}]))
def echo_context(context: str) -> str:
    return context


@app.mcp_tool_trigger(arg_name="context", tool_name="explode", description="Always fails.")
def explode(context: str) -> str:
    raise RuntimeError("boom")
