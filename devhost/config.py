"""Reads an app folder's host.json and local.settings.json the way the Functions host does."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

_SETTING_REF = re.compile(r"%([^%]+)%")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return value


def load_local_settings(app_dir: Path) -> dict[str, str]:
    """`Values` of local.settings.json, as strings (func start puts them in the environment)."""
    settings = _read_json(app_dir / "local.settings.json")
    values = settings.get("Values") or {}
    if not isinstance(values, dict):
        raise ConfigError("local.settings.json: 'Values' must be an object")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def resolve_setting(value, env: dict[str, str]):
    """Expand %SETTING% references like the host does for hubName, schedules and friends."""
    if isinstance(value, str):
        return _SETTING_REF.sub(lambda m: env.get(m.group(1), ""), value)
    return value


@dataclass
class HostConfig:
    """The host.json settings devhost honours."""

    route_prefix: str = "api"
    hub_name: str = "TestHubName"
    max_activities: int = 10
    max_orchestrators: int = 10
    max_entities: int = 10
    max_entity_batch: int = 50
    max_orchestration_actions: int = 100_000
    function_timeout: float | None = None
    default_version: str | None = None
    # app settings (environment / local.settings.json Values), not host.json
    worker_process_count: int = 1      # FUNCTIONS_WORKER_PROCESS_COUNT: Python worker processes
    worker_handles: bool = False       # DEVHOST_WORKER_HANDLES: episodes/batches in workers too
    raw: dict = field(default_factory=dict)


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$")


def _timespan_seconds(text: str) -> float | None:
    """`hh:mm:ss` / `d.hh:mm:ss` TimeSpan text → seconds (-1 or empty → unlimited)."""
    text = text.strip()
    if not text or text == "-1":
        return None
    match = _TIMESPAN.match(text)
    if not match:
        raise ValueError(f"functionTimeout {text!r} is not a TimeSpan like 00:10:00")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_host_config(app_dir: Path, env: dict[str, str] | None = None) -> HostConfig:
    env = dict(os.environ) if env is None else env
    raw = _read_json(app_dir / "host.json")
    ext = raw.get("extensions") or {}
    http = ext.get("http") or {}
    durable = ext.get("durableTask") or {}
    cfg = HostConfig(raw=raw)
    if "routePrefix" in http:
        cfg.route_prefix = str(http["routePrefix"] or "").strip("/")
    cfg.default_version = resolve_setting(durable.get("defaultVersion"), env) or None
    hub = resolve_setting(durable.get("hubName"), env)
    if hub:
        cfg.hub_name = hub
    try:
        cfg.max_activities = int(durable.get("maxConcurrentActivityFunctions", cfg.max_activities))
        cfg.max_orchestrators = int(durable.get("maxConcurrentOrchestratorFunctions",
                                                cfg.max_orchestrators))
        cfg.max_entities = int(durable.get("maxConcurrentEntityFunctions", cfg.max_entities))
        cfg.max_entity_batch = int(durable.get("maxEntityOperationBatchSize",
                                               cfg.max_entity_batch))
        cfg.max_orchestration_actions = int(durable.get("maxOrchestrationActions",
                                                        cfg.max_orchestration_actions))
        cfg.function_timeout = _timespan_seconds(str(raw.get("functionTimeout") or ""))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"host.json: a durableTask limit is not a number: {exc}") from exc
    for name in ("max_activities", "max_orchestrators", "max_entities", "max_entity_batch"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"host.json: {name} must be at least 1")
    cfg.worker_process_count = worker_process_count(env)
    handles = env.get("DEVHOST_WORKER_HANDLES", "").strip().lower()
    cfg.worker_handles = handles in ("1", "true") if handles else cfg.worker_handles
    return cfg


WORKER_COUNT_SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"


def worker_process_count(env: dict[str, str]) -> int:
    """FUNCTIONS_WORKER_PROCESS_COUNT as Azure accepts it: a whole number from 1 to 10."""
    text = (env.get(WORKER_COUNT_SETTING) or "").strip()
    if not text:
        return 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 10:
        raise ConfigError(f"app setting {WORKER_COUNT_SETTING}={text!r} is invalid: it must be a "
                          "whole number from 1 to 10")
    return count
