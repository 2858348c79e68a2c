"""load_balancers (azure-mgmt-network 33.1), autoscale_settings and metrics
(azure-mgmt-monitor 7.0) in front of and around a scale set.

A resource Shoal does not serve yet gets its test anyway, marked
`pytest.mark.xfail(reason="needs issue N: ...", strict=True)`: the day it lands the test
passes, strict xfail turns that into a failure, and the marker is removed (as happened
here for autoscale settings and metrics)."""

import socket
import time

import pytest
from azure.core.exceptions import ResourceNotFoundError

from conftest import DEADLINE, LOCATION, SKU, SUBSCRIPTION, http_get, unique, wait_for, web_image


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lb_body(group, lb_name, frontend_port):
    lb_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Network/loadBalancers/{lb_name}"
    return lb_id, {
        "location": LOCATION,
        "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": "127.0.0.1"}}],
            "backendAddressPools": [{"name": "pool"}],
            "probes": [
                {
                    "name": "health",
                    "properties": {
                        "protocol": "Http",
                        "port": 8080,
                        "requestPath": "/health",
                        "intervalInSeconds": 1,
                        "numberOfProbes": 1,
                    },
                }
            ],
            "loadBalancingRules": [
                {
                    "name": "http",
                    "properties": {
                        "protocol": "Tcp",
                        "frontendPort": frontend_port,
                        "backendPort": 8080,
                        "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                        "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                        "probe": {"id": f"{lb_id}/probes/health"},
                    },
                }
            ],
        },
    }


def vmss_behind(group, image_id, pool_id, capacity):
    return {
        "location": LOCATION,
        "sku": {"name": SKU, "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": image_id}},
                "networkProfile": {
                    "networkInterfaceConfigurations": [
                        {
                            "name": "nic",
                            "properties": {
                                "primary": True,
                                "ipConfigurations": [
                                    {
                                        "name": "ip",
                                        "properties": {"loadBalancerBackendAddressPools": [{"id": pool_id}]},
                                    }
                                ],
                            },
                        }
                    ]
                },
            },
        },
    }


def test_load_balancer_create_get_delete(network, compute, group):
    lb_name, port = unique("lb"), free_port()
    lb_id, body = lb_body(group, lb_name, port)
    lb = network.load_balancers.begin_create_or_update(group, lb_name, body).result(timeout=DEADLINE)
    assert lb.id == lb_id and lb.provisioning_state == "Succeeded"
    assert [p.name for p in lb.backend_address_pools] == ["pool"]
    assert network.load_balancers.get(group, lb_name).load_balancing_rules[0].frontend_port == port

    # Two instances join the pool; the frontend answers from both.
    pool_id = f"{lb_id}/backendAddressPools/pool"
    name = unique("web")
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, vmss_behind(group, web_image(group), pool_id, 2)
    ).result(timeout=DEADLINE)
    seen = set()

    def both_answer():
        seen.add(http_get(f"127.0.0.1:{port}", timeout=2)[1])
        return seen >= {"instance 0", "instance 1"}

    wait_for("both instances to answer through the load balancer", both_answer)

    compute.virtual_machine_scale_sets.begin_delete(group, name).result(timeout=DEADLINE)
    network.load_balancers.begin_delete(group, lb_name).result(timeout=DEADLINE)
    with pytest.raises(ResourceNotFoundError):
        network.load_balancers.get(group, lb_name)
    wait_for("the frontend to close", lambda: not _answers(port))


def _answers(port):
    try:
        http_get(f"127.0.0.1:{port}", timeout=1)
        return True
    except OSError:
        return False


def autoscale_body(target_id, minimum="1", maximum="2", default="1"):
    return {
        "location": LOCATION,
        "properties": {
            "enabled": True,
            "targetResourceUri": target_id,
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": minimum, "maximum": maximum, "default": default},
                    "rules": [
                        {
                            "metricTrigger": {
                                "metricName": "Percentage CPU",
                                "metricResourceUri": target_id,
                                "timeGrain": "PT1M",
                                "statistic": "Average",
                                "timeWindow": "PT5M",
                                "timeAggregation": "Average",
                                "operator": "GreaterThan",
                                "threshold": 70,
                            },
                            "scaleAction": {
                                "direction": "Increase",
                                "type": "ChangeCount",
                                "value": "1",
                                "cooldown": "PT5M",
                            },
                        }
                    ],
                }
            ],
        },
    }


def test_autoscale_settings_lifecycle(monitor, compute, group):
    from conftest import create_vmss

    name = unique("web")
    vmss = create_vmss(compute, group, name, capacity=1)
    setting = unique("autoscale")
    created = monitor.autoscale_settings.create_or_update(group, setting, autoscale_body(vmss.id))
    assert created.name == setting and created.target_resource_uri == vmss.id
    assert monitor.autoscale_settings.get(group, setting).profiles[0].capacity.maximum == "2"

    # Raising the minimum to 2 makes the scale set grow to 2.
    updated = monitor.autoscale_settings.update(
        group, setting, {"profiles": autoscale_body(vmss.id, minimum="2", default="2")["properties"]["profiles"]}
    )
    assert updated.profiles[0].capacity.minimum == "2"
    wait_for(
        "autoscale to raise the capacity to the new minimum",
        lambda: compute.virtual_machine_scale_sets.get(group, name).sku.capacity == 2,
    )
    assert setting in [s.name for s in monitor.autoscale_settings.list_by_resource_group(group)]

    monitor.autoscale_settings.delete(group, setting)
    with pytest.raises(ResourceNotFoundError):
        monitor.autoscale_settings.get(group, setting)


def test_metrics_list_for_a_scale_set(monitor, compute, group):
    from conftest import create_vmss

    name = unique("web")
    vmss = create_vmss(compute, group, name, capacity=1)
    end = time.time()
    timespan = "{}/{}".format(
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end - 600)),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end + 60)),
    )

    def cpu_points():
        result = monitor.metrics.list(
            vmss.id,
            timespan=timespan,
            interval="PT1M",
            metricnames="Percentage CPU",
            aggregation="Average",
        )
        assert result.value[0].name.value == "Percentage CPU"
        series = result.value[0].timeseries
        return series and [p for p in series[0].data if p.average is not None]

    cpu_points()  # answers at all (fails at once while the API is missing)
    points = wait_for("a Percentage CPU data point", cpu_points)
    assert all(0 <= p.average <= 100 for p in points)
