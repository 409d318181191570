"""Orchestration versions reach `context.version` as in Azure: the client's start_new(version=),
else host.json's defaultVersion; sub-orchestrations take theirs or the default."""
from conftest import wait_for_status


def test_versions_from_the_client_the_default_and_sub_orchestrations(devhost_factory):
    host = devhost_factory("versions").start()
    explicit = host.request("POST", "/api/start/report_version?version=2.5").json()["id"]
    default = host.request("POST", "/api/start/report_version").json()["id"]
    assert wait_for_status(host, explicit)["output"] == {
        "self": "2.5", "child": "3.0", "default_child": "1.0"}
    assert wait_for_status(host, default)["output"]["self"] == "1.0"
    # the public webhook ignores ?version= (the extension does too) and applies the default
    started = host.request(
        "POST", "/runtime/webhooks/durabletask/orchestrators/report_version?version=9")
    assert wait_for_status(host, started.json()["id"])["output"]["self"] == "1.0"
