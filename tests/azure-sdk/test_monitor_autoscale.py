"""azure-mgmt-monitor beyond settings CRUD (issue 4): the activity log shows what autoscale
did, metric definitions list the scale set's metrics, a bad setting is an HttpResponseError
naming its field, and settings list by subscription."""
import pytest
from azure.core.exceptions import HttpResponseError

from conftest import LOCATION, unique, wait_for


def setting_body(target_id, minimum, maximum, default):
    return {
        "location": LOCATION,
        "properties": {
            "enabled": True,
            "targetResourceUri": target_id,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": minimum, "maximum": maximum, "default": default},
                    "rules": [],
                }
            ],
            "shoal": {"evaluationInterval": "PT1S"},
        },
    }


def test_activity_log_and_metric_definitions(monitor, compute, group):
    from conftest import create_vmss

    vmss = create_vmss(compute, group, unique("web"), capacity=1)
    name = unique("autoscale")
    # The minimum 2 is above the capacity 1: autoscale raises it at once.
    monitor.autoscale_settings.create_or_update(group, name, setting_body(vmss.id, "2", "3", "2"))

    def scale_up_events():
        f = f"eventTimestamp ge '2020-01-01T00:00:00Z' and resourceUri eq '{vmss.id}'"
        return [
            e
            for e in monitor.activity_logs.list(filter=f)
            if e.operation_name.value == "Microsoft.Insights/AutoscaleSettings/Scaleup/Action"
        ]

    events = wait_for("an autoscale scale-up event in the activity log", scale_up_events)
    assert events[0].properties["OldInstancesCount"] == "1"
    assert events[0].properties["NewInstancesCount"] == "2"
    assert events[0].resource_group_name.lower() == group.lower()

    names = [d.name.value for d in monitor.metric_definitions.list(vmss.id)]
    assert "Percentage CPU" in names and "Requests Per Second" in names
    assert name in [s.name for s in monitor.autoscale_settings.list_by_subscription()]


def test_bad_settings_are_refused_with_the_field(monitor, compute, group):
    from conftest import create_vmss

    vmss = create_vmss(compute, group, unique("web"), capacity=1)
    name = unique("autoscale")
    with pytest.raises(HttpResponseError) as bad:
        monitor.autoscale_settings.create_or_update(group, name, setting_body(vmss.id, "3", "2", "2"))
    assert bad.value.status_code == 400
    assert bad.value.error.target == "properties.profiles[0].capacity"
    missing = vmss.id.rsplit("/", 1)[0] + "/nope"
    with pytest.raises(HttpResponseError) as bad:
        monitor.autoscale_settings.create_or_update(group, name, setting_body(missing, "1", "2", "1"))
    assert bad.value.error.target == "properties.targetResourceUri"
    # Nothing was stored.
    assert name not in [s.name for s in monitor.autoscale_settings.list_by_resource_group(group)]
