"""Static checks for the azd + Bicep deployment (azure.yaml, infra/).

The Bicep compiler is not available on the development machines, so these tests
check what can be checked by reading the files: structure, wiring between files,
the app settings the code reads versus the ones the templates write, role ids,
and security properties. The real check remains `az bicep build --file
infra/main.bicep` and `azd provision --preview` (see docs/deploy.md).

Standard library only.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
MAIN_PARAMETERS = INFRA / "main.parameters.json"
MODULES = INFRA / "modules"
FUNCTION_APP_BICEP = MODULES / "function-app.bicep"
STORAGE_BICEP = MODULES / "storage.bicep"
MONITORING_BICEP = MODULES / "monitoring.bicep"
OPENAI_BICEP = MODULES / "openai.bicep"
SCHEDULER_BICEP = MODULES / "scheduler.bicep"
ROLES_BICEP = MODULES / "role-assignments.bicep"
AZURE_YAML = ROOT / "azure.yaml"

# Where the Function app reads its settings.
APP_FILES = ["function_app.py"]
APP_DIRS = ["orchestrators", "activities", "entities", "core", "tools"]
HOST_JSON = ROOT / "host.json"

# ---------------------------------------------------------------------------
# Settings the code may read that Azure deliberately does NOT get.
# Each entry says why; adding a name here is a decision, not a fix-up.
# ---------------------------------------------------------------------------
LOCAL_ONLY_SETTINGS = {
    # Key auth is disabled on the Azure OpenAI account; Azure uses the identity.
    "AZURE_OPENAI_API_KEY": "local key-based Azure OpenAI access",
    # Alias of AZURE_OPENAI_DEPLOYMENT accepted for local .env files.
    "AZURE_OPENAI_DEPLOYMENT_NAME": "local alias of AZURE_OPENAI_DEPLOYMENT",
    # OpenAI-compatible providers (openai.com, local servers) are local choices.
    "OPENAI_BASE_URL": "local OpenAI-compatible provider",
    "OPENAI_API_KEY": "local OpenAI-compatible provider",
    "OPENAI_MODEL": "local OpenAI-compatible provider",
    # A local model file does not exist on a Flex Consumption instance.
    "LOCAL_MODEL_PATH": "local in-process model",
    "LOCAL_MODEL_THREADS": "local in-process model",
    # Tuning knobs whose code defaults are what Azure runs with.
    "AGENTS_FILE": "code default used in Azure",
    "LLM_TIMEOUT_SECONDS": "code default used in Azure",
    "LLM_MAX_ATTEMPTS": "code default used in Azure",
    "TURN_WAIT_SECONDS": "code default used in Azure",
    "MAX_MESSAGE_BYTES": "code default used in Azure",
    "THREAD_MAX_STATE_BYTES": "code default used in Azure",
    "THREAD_TTL_HOURS": "thread clean-up is off unless set (azd env / portal)",
    "THREAD_TTL_CHECK_SECONDS": "code default used in Azure",
    "LLM_RETRY_BASE_SECONDS": "code default used in Azure",
    "LLM_RETRY_MAX_WAIT_SECONDS": "code default used in Azure",
    "LLM_RETRY_AFTER_MAX_SECONDS": "code default used in Azure",
    "LOCAL_MODEL_CTX": "local in-process model",
    # The sample tools' ledger: the code default (the temp folder) is what Azure runs with.
    "TOOLS_DATA_DIR": "code default used in Azure",
    # Extra tool modules, for test-only tools.
    "TOOLS_MODULES": "tests load test-only tools",
}
# devhost-only settings.
LOCAL_ONLY_PREFIXES = ("DEVHOST_",)
# Set by the Functions platform itself, never by the templates.
PLATFORM_PREFIXES = ("FUNCTIONS_", "WEBSITE_")
PLATFORM_SETTINGS = {"AZURE_FUNCTIONS_ENVIRONMENT"}

# Settings the templates write that are consumed by the Functions host, the
# Python worker or an SDK rather than by a literal read in the app code.
HOST_CONSUMED_SETTINGS = {
    # Functions host storage connection through the managed identity.
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    # Application Insights (host + worker), Entra ID authenticated.
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # azure-identity picks the user-assigned identity from this variable itself.
    "AZURE_CLIENT_ID",
    # The Python worker: index at init, which starts its FastAPI (HTTP v2) server.
    "PYTHON_ENABLE_INIT_INDEXING",
}

# What the Bicep must write (the brief's contract with the app).
REQUIRED_APP_SETTINGS = {
    "LLM_PROVIDER",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_API_VERSION",
    "AZURE_CLIENT_ID",
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    "TASKHUB_NAME",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# Documented Azure built-in role definition ids (identical in every cloud).
DOCUMENTED_ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Cognitive Services OpenAI User": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "Durable Task Data Contributor": "0ad04412-c4d5-4796-b79c-f76d14c8d402",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

REQUIRED_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_NAME",
    "AZURE_FUNCTION_URL",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "DTS_NAME",
    "DTS_ENDPOINT",
    "DTS_DASHBOARD_URL",
    "TASKHUB_NAME",
    "AZURE_CLIENT_ID",
}

GUID_RE = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
ENV_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
ENV_READ_RES = [
    # os.environ.get("X"), environ.get("X"), os.environ["X"]
    re.compile(r"\benviron\s*(?:\.get\s*\(|\[)\s*[rbuRBU]?[\"']" + ENV_NAME + r"[\"']"),
    # os.getenv("X"), getenv("X")
    re.compile(r"\bgetenv\s*\(\s*[rbuRBU]?[\"']" + ENV_NAME + r"[\"']"),
]
HOST_JSON_SETTING_RE = re.compile(r"%" + ENV_NAME + r"%")
# host.json keys whose value is the *name* of an app setting.
HOST_JSON_NAME_KEYS = {"connectionStringName", "connection"}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments, leaving single-quoted strings intact."""
    out = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == "'":
                in_str = False
            i += 1
        elif c == "'":
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


DESCRIPTION_RE = re.compile(r"@(?:sys\.)?description\(\s*'(?:[^'\\]|\\.)*'\s*\)")


def code_only(text: str) -> str:
    """Bicep text without comments and without @description strings."""
    return DESCRIPTION_RE.sub("", strip_comments(text))


PARAM_RE = re.compile(r"^\s*param\s+([A-Za-z_]\w*)\s+(\w+)(.*)$", re.MULTILINE)


def bicep_params(text: str) -> dict[str, dict]:
    """name -> {'type', 'default' (str|None, single-line literals only), 'allowed' (list|None)}."""
    code = code_only(text)
    params: dict[str, dict] = {}
    for m in PARAM_RE.finditer(code):
        name, ptype, rest = m.group(1), m.group(2), m.group(3)
        default = None
        dm = re.match(r"\s*=\s*(.+?)\s*$", rest)
        if dm:
            default = dm.group(1).strip()
            if default.startswith("'") and default.endswith("'"):
                default = default[1:-1]
        params[name] = {"type": ptype, "default": default, "allowed": None, "has_default": bool(dm)}
    allowed_re = re.compile(
        r"@allowed\(\s*\[([^\]]*)\]\s*\)"  # the allowed list
        r"((?:\s*@\w+\((?:[^()]|\([^()]*\))*\))*)"  # other decorators in between
        r"\s*param\s+(\w+)"
    )
    for m in allowed_re.finditer(code):
        values = re.findall(r"'([^']*)'|\b(\d+)\b", m.group(1))
        params.setdefault(m.group(3), {})["allowed"] = [a or b for a, b in values]
    return params


def find_block(text: str, anchor: str | re.Pattern) -> str:
    """Text inside the first {...} that follows `anchor` (balanced braces)."""
    m = re.search(anchor, text)
    assert m, f"anchor {anchor!r} not found"
    start = text.index("{", m.end() - 1 if text[m.end() - 1] == "{" else m.end())
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise AssertionError(f"unbalanced braces after {anchor!r}")


def top_level_entries(block: str) -> dict[str, str]:
    """key -> raw value for the top level of a Bicep object body."""
    entries: dict[str, str] = {}
    depth = 0
    for line in block.splitlines():
        if depth == 0:
            m = re.match(r"\s*('([^']+)'|[A-Za-z_][\w]*)\s*:\s*(.*)$", line)
            if m:
                key = m.group(2) or m.group(1)
                entries[key] = m.group(3).strip()
        depth += line.count("{") - line.count("}")
        depth += line.count("[") - line.count("]")
    return entries


def bicep_app_settings() -> dict[str, str]:
    code = strip_comments(read(FUNCTION_APP_BICEP))
    # The 'config' child named 'appsettings' carries every app setting.
    anchor = re.compile(r"name:\s*'appsettings'\s*\n\s*properties:\s*\{")
    return top_level_entries(find_block(code, anchor))


def app_sources() -> list[Path]:
    files = [ROOT / f for f in APP_FILES if (ROOT / f).is_file()]
    for d in APP_DIRS:
        if (ROOT / d).is_dir():
            files.extend(sorted((ROOT / d).rglob("*.py")))
    return files


def _is_environ(node: ast.AST) -> bool:
    """os.environ or a bare environ (from os import environ)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _first_str(args: list[ast.expr]) -> str | None:
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def env_reads_in(text: str) -> set[str]:
    """Names read as os.environ.get("X"), os.getenv("X") or os.environ["X"].

    Parsed with ast so docstrings and comments that merely mention a call do not
    count; falls back to regexes if the file does not parse (e.g. mid-edit).
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        names: set[str] = set()
        for rx in ENV_READ_RES:
            names.update(rx.findall(text))
        return names
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            )
            environ_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)
            if getenv or environ_get:
                name = _first_str(node.args)
                if name:
                    names.add(name)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


def host_json_reads(text: str) -> set[str]:
    names = set(HOST_JSON_SETTING_RE.findall(text))

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in HOST_JSON_NAME_KEYS and isinstance(v, str) and "%" not in v:
                    names.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(text))
    return names


def is_local_or_platform(name: str) -> bool:
    return (
        name in LOCAL_ONLY_SETTINGS
        or name in PLATFORM_SETTINGS
        or name.startswith(LOCAL_ONLY_PREFIXES)
        or name.startswith(PLATFORM_PREFIXES)
    )


def parse_simple_yaml(text: str) -> dict:
    """Indentation-based mapping parser: enough for azure.yaml (no lists, no anchors)."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        assert sep, f"azure.yaml: not a 'key: value' line: {raw!r}"
        while stack and indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip().strip("'\"")
        if value:
            parent[key.strip()] = value
        else:
            child: dict = {}
            parent[key.strip()] = child
            stack.append((indent, child))
    return root


def normalize(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


# ---------------------------------------------------------------------------
# azure.yaml
# ---------------------------------------------------------------------------


def test_azure_yaml_declares_python_function_service():
    doc = parse_simple_yaml(read(AZURE_YAML))
    assert doc.get("name"), "azure.yaml needs a project name"
    services = doc.get("services")
    assert isinstance(services, dict) and services, "azure.yaml needs services"
    api = services.get("api")
    assert isinstance(api, dict), "azure.yaml needs the 'api' service"
    assert api.get("language") == "python"
    assert api.get("host") == "function"
    project = api.get("project")
    assert project, "service 'api' needs a project path"
    assert (ROOT / project).is_dir(), f"project path {project!r} does not exist"


def test_azd_service_tag_matches_azure_yaml_service():
    services = parse_simple_yaml(read(AZURE_YAML))["services"]
    code = strip_comments(read(FUNCTION_APP_BICEP))
    tagged = re.findall(r"'azd-service-name'\s*:\s*'([^']+)'", code)
    assert tagged, "Function app needs an azd-service-name tag"
    assert set(tagged) <= set(services), f"tag {tagged} not a service in azure.yaml"


def test_funcignore_keeps_non_app_folders_out_of_the_package():
    funcignore = ROOT / ".funcignore"
    entries = {line.strip().strip("/") for line in read(funcignore).splitlines()}
    for folder in ("devhost", "tests", "bench", "infra"):
        assert folder in entries, f".funcignore should exclude {folder}/"


# ---------------------------------------------------------------------------
# Wiring between the Bicep files
# ---------------------------------------------------------------------------


def test_expected_bicep_files_exist():
    for path in (MAIN_BICEP, FUNCTION_APP_BICEP, STORAGE_BICEP, MONITORING_BICEP,
                 OPENAI_BICEP, SCHEDULER_BICEP, ROLES_BICEP):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


def test_module_and_json_paths_exist():
    seen = 0
    for path in bicep_files():
        code = strip_comments(read(path))
        for ref in re.findall(r"^\s*module\s+\w+\s+'([^']+)'", code, re.MULTILINE):
            if ref.startswith(("br/", "br:", "ts/", "ts:")):
                continue
            seen += 1
            assert (path.parent / ref).is_file(), f"{path.name}: module path {ref} missing"
        for ref in re.findall(r"load(?:Json|Text|Yaml)Content\(\s*'([^']+)'", code):
            assert (path.parent / ref).is_file(), f"{path.name}: {ref} missing"
    assert seen >= 6, "main.bicep should compose the modules under infra/modules/"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_param_is_used(path: Path):
    code = code_only(read(path))
    params = bicep_params(read(path))
    assert params or path == MAIN_BICEP, f"{path.name} declares no params"
    for name in params:
        # A reference: the identifier, not an object key and not a .member.
        refs = re.findall(r"(?<![\w.$])" + re.escape(name) + r"\b(?!\s*:)", code)
        # One hit is the declaration itself.
        assert len(refs) >= 2, f"{path.name}: param {name} is declared but never used"


def test_every_param_is_described():
    for path in bicep_files():
        text = strip_comments(read(path))
        for m in re.finditer(r"^\s*param\s+(\w+)", text, re.MULTILINE):
            # Decorators sit between the previous declaration and this one.
            window = re.split(
                r"^\s*(?:param|var|resource|module|output|targetScope)\b[^\n]*$",
                text[: m.start()],
                flags=re.MULTILINE,
            )[-1]
            assert "@description(" in window, f"{path.name}: param {m.group(1)} lacks @description"


def test_parameters_file_matches_main_bicep():
    doc = json.loads(read(MAIN_PARAMETERS))
    given = doc["parameters"]
    declared = bicep_params(read(MAIN_BICEP))
    for name in given:
        assert name in declared, f"main.parameters.json sets unknown param {name}"
    for name, info in declared.items():
        if not info.get("has_default"):
            assert name in given, f"required param {name} is not mapped in main.parameters.json"
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_parameter_file_defaults_agree_with_bicep():
    """`${VAR=default}` in the parameters file must match the Bicep default and @allowed."""
    given = json.loads(read(MAIN_PARAMETERS))["parameters"]
    declared = bicep_params(read(MAIN_BICEP))
    checked = 0
    for name, entry in given.items():
        value = entry.get("value")
        m = re.fullmatch(r"\$\{[A-Z0-9_]+=(.*)\}", str(value))
        if not m:
            continue
        checked += 1
        fallback = m.group(1)
        info = declared[name]
        if info.get("default") is not None:
            assert fallback == info["default"], (
                f"{name}: parameters file falls back to {fallback!r}, Bicep to {info['default']!r}"
            )
        if info.get("allowed"):
            assert fallback in info["allowed"], f"{name}: {fallback!r} not in @allowed"
    assert checked >= 5


# ---------------------------------------------------------------------------
# App settings: the Bicep writes exactly what the app reads
# ---------------------------------------------------------------------------


def test_bicep_writes_the_required_app_settings():
    settings = bicep_app_settings()
    missing = REQUIRED_APP_SETTINGS - set(settings)
    assert not missing, f"app settings missing from function-app.bicep: {sorted(missing)}"
    for name in settings:
        assert not is_local_or_platform(name), f"{name} is local-only/platform and must not be set"


def test_app_setting_values():
    s = bicep_app_settings()
    assert s["LLM_PROVIDER"] == "'azure_openai'"
    assert s["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert s["AzureWebJobsStorage__clientId"] == s["AZURE_CLIENT_ID"]
    assert re.fullmatch(r"'ClientId=\$\{\w+\};Authorization=AAD'", s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
    dts = s["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"]
    assert dts.startswith("'Endpoint=${"), dts
    assert "Authentication=ManagedIdentity" in dts
    assert re.search(r"ClientID=\$\{\w+\}", dts), "UAMI needs ClientID= in the DTS connection string"
    assert "AccountKey" not in s["APPLICATIONINSIGHTS_CONNECTION_STRING"]


def test_env_read_scanner_finds_literal_reads():
    """Guards the cross-check below against a scanner that silently finds nothing."""
    sample = (
        'a = os.environ.get("ONE")\n'
        "b = os.getenv('TWO', 'x')\n"
        'c = os.environ["THREE"]\n'
        'd = environ.get( "FOUR" )\n'
        'e = settings.get("NOT_ENV")\n'
    )
    assert env_reads_in(sample) == {"ONE", "TWO", "THREE", "FOUR"}
    # A docstring that only mentions the pattern is not a read.
    assert env_reads_in('"""Use os.environ.get("DOC") here."""\nx = 1\n') == set()
    # The regex fallback (file mid-edit) still finds literal reads.
    assert env_reads_in('os.environ.get("BROKEN"\n') == {"BROKEN"}
    host = '{"extensions": {"durableTask": {"hubName": "%HUB%", "storageProvider": {"connectionStringName": "CONN"}}}}'
    assert host_json_reads(host) == {"HUB", "CONN"}


def _code_reads() -> tuple[set[str], set[str]]:
    """(names read via os.environ/getenv or host.json, every string literal in the app)."""
    reads: set[str] = set()
    literals: set[str] = set()
    for path in app_sources():
        text = read(path)
        reads |= env_reads_in(text)
        literals |= set(re.findall(r"[\"']" + ENV_NAME + r"[\"']", text))
    if HOST_JSON.is_file():
        host = host_json_reads(read(HOST_JSON))
        reads |= host
        literals |= host
    return reads, literals


def test_every_setting_the_code_reads_is_set_in_azure():
    assert app_sources() and HOST_JSON.is_file(), "the app's code and host.json are missing"
    reads, _ = _code_reads()
    settings = set(bicep_app_settings())
    missing = sorted(n for n in reads if n not in settings and not is_local_or_platform(n))
    assert not missing, (
        f"the app reads {missing} but infra/modules/function-app.bicep does not set them; "
        "set them there or add them, with a reason, to LOCAL_ONLY_SETTINGS"
    )


def test_every_setting_set_in_azure_is_read():
    assert (ROOT / "function_app.py").is_file() and HOST_JSON.is_file()
    _, literals = _code_reads()
    unread = sorted(
        n for n in bicep_app_settings() if n not in literals and n not in HOST_CONSUMED_SETTINGS
    )
    assert not unread, f"function-app.bicep sets {unread} but nothing reads them"


# ---------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------


def test_role_ids_are_documented_and_named():
    guid_to_name = {v.lower(): k for k, v in DOCUMENTED_ROLE_IDS.items()}
    used: set[str] = set()
    for path in bicep_files():
        lines = read(path).splitlines()
        for i, line in enumerate(lines):
            for guid in GUID_RE.findall(line):
                role = guid_to_name.get(guid.lower())
                assert role, f"{path.name}:{i + 1}: {guid} is not a documented role id in the table"
                context = normalize(" ".join(lines[max(0, i - 1) : i + 1]))
                named = {r for r in DOCUMENTED_ROLE_IDS if normalize(r) in context}
                assert named == {role}, (
                    f"{path.name}:{i + 1}: {guid} is {role!r} but the line and its comment name {sorted(named)}"
                )
                used.add(role)
    assert used == set(DOCUMENTED_ROLE_IDS), f"roles not granted: {set(DOCUMENTED_ROLE_IDS) - used}"


def test_role_id_variables_are_assigned():
    code = strip_comments(read(ROLES_BICEP))
    role_vars = re.findall(r"^\s*var\s+(\w+)\s*=\s*'" + GUID_RE.pattern[2:-2] + "'", code, re.MULTILINE)
    assert len(role_vars) == len(DOCUMENTED_ROLE_IDS)
    for var in role_vars:
        assert len(re.findall(r"\b" + var + r"\b", code)) >= 2, f"{var} declared but never assigned"
    assert "subscriptionResourceId('Microsoft.Authorization/roleDefinitions'" in code
    assert code.count("Microsoft.Authorization/roleAssignments@") >= 4


# Which roles may be granted at which scope (the existing-resource symbol in
# role-assignments.bicep): a role on the wrong resource grants nothing useful.
ROLE_SCOPES = {
    "storage": {"Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"},
    "openAi": {"Cognitive Services OpenAI User"},
    "scheduler": {"Durable Task Data Contributor"},
    "applicationInsights": {"Monitoring Metrics Publisher"},
}


def test_role_assignments_target_the_matching_resource():
    code = strip_comments(read(ROLES_BICEP))
    var_role = {}
    for var, guid in re.findall(r"^\s*var\s+(\w+)\s*=\s*'([0-9a-fA-F-]{36})'", code, re.MULTILINE):
        var_role[var] = {v: k for k, v in DOCUMENTED_ROLE_IDS.items()}[guid.lower()]
    # Role id lists (e.g. the storage loop) expand to their member variables.
    lists = {
        name: re.findall(r"\b(\w+RoleId)\b", body)
        for name, body in re.findall(r"^\s*var\s+(\w+)\s*=\s*\[([^\]]*)\]", code, re.MULTILINE)
    }
    granted: dict[str, set[str]] = {}
    for m in re.finditer(r"resource\s+\w+\s+'Microsoft\.Authorization/roleAssignments@[^']+'\s*=", code):
        rest = code[m.end():]
        nxt = re.search(r"^resource\s", rest, re.MULTILINE)
        body = rest[: nxt.start()] if nxt else rest
        scope = re.search(r"scope:\s*(\w+)", body).group(1)
        loop = re.search(r"for\s+(\w+)\s+in\s+(\w+)\s*:", body)
        role_ref = re.search(
            r"roleDefinitionId:\s*subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions',\s*(\w+)\)", body
        ).group(1)
        role_vars = lists[loop.group(2)] if loop and role_ref == loop.group(1) else [role_ref]
        for var in role_vars:
            role = var_role[var]
            assert role in ROLE_SCOPES[scope], f"{role} is assigned on {scope}"
            granted.setdefault(scope, set()).add(role)
    assert granted == ROLE_SCOPES


def test_app_identity_and_developer_get_the_roles():
    code = strip_comments(read(MAIN_BICEP))
    calls = re.findall(
        r"module\s+(\w+)\s+'modules/role-assignments\.bicep'\s*=\s*(if\s*\([^)]*\)\)?\s*)?\{", code
    )
    assert len(calls) == 2, "role-assignments.bicep should be used for the app and the developer"
    app_block = find_block(code, r"module\s+appRoles\s+'modules/role-assignments\.bicep'\s*=\s*\{")
    assert "principalType: 'ServicePrincipal'" in app_block
    assert "identity.outputs.principalId" in app_block
    dev = re.search(r"module\s+(\w+)\s+'modules/role-assignments\.bicep'\s*=\s*if\s*\(\s*!empty\(principalId\)\s*\)", code)
    assert dev, "developer roles must be conditional on a non-empty principalId"
    dev_block = find_block(code, re.escape(dev.group(0)))
    assert "principalId: principalId" in dev_block
    assert bicep_params(read(MAIN_BICEP))["principalType"]["default"] == "User"


# ---------------------------------------------------------------------------
# No secrets
# ---------------------------------------------------------------------------

FORBIDDEN = [
    (re.compile(r"listkeys\s*\(", re.I), "listKeys("),
    (re.compile(r"listsecrets\s*\(", re.I), "listSecrets("),
    (re.compile(r"accountkey\s*=", re.I), "AccountKey="),
    (re.compile(r"sharedaccesskey\s*=", re.I), "SharedAccessKey="),
    (re.compile(r"instrumentationkey", re.I), "InstrumentationKey"),
    (re.compile(r"\.primarykey\b|\.key1\b", re.I), "account keys"),
]


def test_no_secrets_in_templates():
    files = bicep_files() + sorted(INFRA.rglob("*.json"))
    for path in files:
        text = read(path)
        code = strip_comments(text) if path.suffix == ".bicep" else text
        for rx, label in FORBIDDEN:
            assert not rx.search(code), f"{path.name} uses {label}"
        for m in re.finditer(r"connectionString[^\n]*", code, re.I):
            assert "AccountKey" not in m.group(0), f"{path.name}: key-based connection string"


def test_secure_params_are_justified_and_have_no_default():
    for path in bicep_files():
        text = read(path)
        for m in re.finditer(r"@secure\(\)", text):
            following = text[m.end():].split("param", 1)[1].splitlines()[0]
            assert "=" not in following, f"{path.name}: @secure param with a default"
            preceding = "\n".join(text[: m.start()].splitlines()[-3:])
            assert "justification" in preceding.lower(), f"{path.name}: @secure param without justification"


def test_parameters_file_holds_no_secret_values():
    given = json.loads(read(MAIN_PARAMETERS))["parameters"]
    for name, entry in given.items():
        assert not re.search(r"key|secret|password", name, re.I), f"secret-looking param {name}"
        assert "reference" not in entry, f"{name} pulls a Key Vault secret"


# ---------------------------------------------------------------------------
# Security and platform properties
# ---------------------------------------------------------------------------


def test_storage_is_identity_only():
    code = strip_comments(read(STORAGE_BICEP))
    assert re.search(r"allowSharedKeyAccess:\s*false", code)
    assert re.search(r"allowBlobPublicAccess:\s*false", code)
    assert re.search(r"minimumTlsVersion:\s*'TLS1_2'", code)
    assert re.search(r"resource\s+\w+\s+'containers'", code), "deployment container missing"


def test_openai_is_token_only_with_parameterised_deployment():
    code = strip_comments(read(OPENAI_BICEP))
    assert re.search(r"kind:\s*'(OpenAI|AIServices)'", code)
    assert re.search(r"disableLocalAuth:\s*true", code)
    assert re.search(r"customSubDomainName:\s*\w+", code)
    dep = find_block(code, r"resource\s+\w+\s+'Microsoft\.CognitiveServices/accounts/deployments@[^']+'\s*=\s*\{")
    assert re.search(r"name:\s*skuName", dep) and re.search(r"capacity:\s*capacity", dep)
    assert re.search(r"name:\s*modelName", dep) and re.search(r"version:\s*modelVersion", dep)
    p = bicep_params(read(MAIN_BICEP))
    assert p["chatModelName"]["default"] == "gpt-4o-mini"
    assert "gpt-4o-mini" in p["chatModelName"]["allowed"]
    assert p["chatModelVersion"]["default"] == "2024-07-18"
    assert p["chatDeploymentSkuName"]["default"] == "GlobalStandard"
    assert "GlobalStandard" in p["chatDeploymentSkuName"]["allowed"]
    assert 1 <= int(p["chatDeploymentCapacity"]["default"]) <= 100, "keep the default capacity modest"


def test_application_insights_is_entra_only():
    code = strip_comments(read(MONITORING_BICEP))
    # Case matters: the ARM property is DisableLocalAuth.
    assert re.search(r"\bDisableLocalAuth:\s*true", code)
    assert re.search(r"WorkspaceResourceId:\s*\w+\.id", code)


def test_function_app_is_flex_consumption_python():
    code = strip_comments(read(FUNCTION_APP_BICEP))
    plan = find_block(code, r"resource\s+\w+\s+'Microsoft\.Web/serverfarms@[^']+'\s*=\s*\{")
    assert re.search(r"name:\s*'FC1'", plan) and re.search(r"tier:\s*'FlexConsumption'", plan)
    assert re.search(r"reserved:\s*true", plan)
    site = find_block(code, r"resource\s+\w+\s+'Microsoft\.Web/sites@[^']+'\s*=\s*\{")
    assert re.search(r"kind:\s*'functionapp,linux'", site)
    assert re.search(r"type:\s*'UserAssigned'", site)
    config = find_block(site, r"functionAppConfig:\s*\{")
    assert re.search(r"type:\s*'blobContainer'", config)
    assert re.search(r"type:\s*'UserAssignedIdentity'", config)
    assert re.search(r"instanceMemoryMB:\s*2048", config)
    assert re.search(r"maximumInstanceCount:\s*maximumInstanceCount\b", config)
    runtime = re.search(r"runtime:\s*\{\s*name:\s*'python'\s*version:\s*'(\d+)\.(\d+)'", config)
    assert runtime, "functionAppConfig.runtime must be python with a literal version"
    assert (int(runtime.group(1)), int(runtime.group(2))) >= (3, 11)
    # Flex Consumption rejects or ignores these; the runtime lives in functionAppConfig.
    for deprecated in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"):
        assert deprecated not in code


def _api_version(code: str, rtype: str) -> str:
    m = re.search(r"'" + re.escape(rtype) + r"@(\d{4}-\d{2}-\d{2})(?:-preview)?'", code)
    assert m, f"{rtype} not declared"
    return m.group(1)


def test_durable_task_scheduler():
    code = strip_comments(read(SCHEDULER_BICEP))
    assert _api_version(code, "Microsoft.DurableTask/schedulers") >= "2025-04-01"
    assert _api_version(code, "Microsoft.DurableTask/schedulers/taskHubs") >= "2025-04-01"
    assert re.search(r"ipAllowlist:\s*ipAllowlist", code)
    assert re.search(r"parent:\s*scheduler", code)
    assert re.search(r"capacity:\s*capacity", code)
    p = bicep_params(read(MAIN_BICEP))
    assert p["dtsSkuName"]["default"] == "Consumption"
    assert set(p["dtsSkuName"]["allowed"]) == {"Consumption", "Dedicated"}
    assert p["taskHubName"]["default"] == "default"
    main = read(MAIN_BICEP)
    allow = re.search(r"param\s+dtsIpAllowlist\s+array\s*=\s*\[\s*'([^']+)'\s*\]", main)
    assert allow and allow.group(1) == "0.0.0.0/0"
    # The open allow-list must carry its reason.
    comment = "\n".join(main[: allow.start()].splitlines()[-8:]).lower()
    assert "outbound" in comment and "entra" in comment


def test_main_bicep_scope_naming_and_tags():
    code = strip_comments(read(MAIN_BICEP))
    assert re.search(r"^targetScope\s*=\s*'subscription'", code, re.MULTILINE)
    assert "'Microsoft.Resources/resourceGroups@" in code
    assert re.search(r"uniqueString\(\s*subscription\(\)\.id\s*,\s*environmentName\s*,\s*location\s*\)", code)
    assert re.search(r"loadJsonContent\('abbreviations\.json'\)", code)
    assert re.search(r"'azd-env-name'\s*:\s*environmentName", code)
    abbrs = json.loads(read(INFRA / "abbreviations.json"))
    for key in re.findall(r"abbrs\.(\w+)", code):
        assert key in abbrs, f"abbreviations.json lacks {key}"
    locations = bicep_params(read(MAIN_BICEP))["location"]["allowed"]
    assert locations and len(locations) == len(set(locations))


def test_outputs_for_azd_env():
    code = strip_comments(read(MAIN_BICEP))
    outputs = set(re.findall(r"^\s*output\s+(\w+)\s+string\s*=", code, re.MULTILINE))
    missing = REQUIRED_OUTPUTS - outputs
    assert not missing, f"missing outputs: {sorted(missing)}"
    dashboard = re.search(r"output\s+DTS_DASHBOARD_URL\s+string\s*=\s*'([^\n]+)'", code).group(1)
    assert dashboard.startswith("https://dashboard.durabletask.io/?endpoint=")
    assert "&taskhub=" in dashboard
