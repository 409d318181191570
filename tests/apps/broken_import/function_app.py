"""An app whose import fails: devhost must say so in one readable line."""
import azure.functions as func

app = func.FunctionApp()

SETTINGS = {"region": "north"}
raise RuntimeError(f"cannot configure the app: missing setting {SETTINGS['region']!r}-db")
