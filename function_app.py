"""The durable agent Function app: wires the blueprints together and nothing else."""
import azure.durable_functions as df
import azure.functions as func

from activities.llm import bp as llm_activity
from activities.stream import bp as stream_activities
from activities.tools import bp as tool_activities
from activities.turns import bp as turn_activities
from api.approvals import bp as approvals_api
from api.health import bp as health_api
from api.mcp import bp as mcp_tools
from api.openapi import bp as openapi_api
from api.run import bp as run_api
from api.stream import bp as stream_api
from api.threads import bp as thread_api
from api.workflows import bp as workflow_api
from entities.thread import bp as thread_entities
from entities.thread_index import bp as thread_index_entity
from orchestrators.agent_turn import bp as turn_orchestrators
from orchestrators.housekeeping import bp as housekeeping_orchestrators
from orchestrators.workflows import bp as workflow_orchestrators

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (run_api, thread_api, health_api, openapi_api, turn_orchestrators,
                  llm_activity, tool_activities, turn_activities, thread_entities,
                  thread_index_entity, housekeeping_orchestrators, approvals_api,
                  workflow_api, workflow_orchestrators, mcp_tools, stream_api, stream_activities):
    app.register_functions(blueprint)
