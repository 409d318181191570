"""`GET /api/health`: the app is up, which agents it serves and which model provider it uses."""
from __future__ import annotations

import json

import azure.functions as func

from activities.providers import describe_provider
from core.agents import load_catalogue

from .web import fastapi_route

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@fastapi_route
def http_health(req: func.HttpRequest) -> func.HttpResponse:
    body = {"status": "ok", "agents": [a.name for a in load_catalogue().values()],
            "provider": describe_provider()}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
