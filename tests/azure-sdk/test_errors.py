"""Bad input through the SDK raises the exceptions a user's `except` clauses expect, with
ARM error bodies, and never a Retry-After on a 4xx (azure-core would retry it)."""

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.compute import models as cm

from conftest import DEADLINE, SKU, create_vmss, unique, vmss_model, web_image


class Responses:
    """Records every response the client saw (retries included)."""

    def __init__(self):
        self.seen = []

    def __call__(self, response):
        r = response.http_response
        self.seen.append((r.status_code, r.headers.get("Retry-After")))


def test_missing_scale_set_and_group(compute, group):
    with pytest.raises(ResourceNotFoundError) as e:
        compute.virtual_machine_scale_sets.get(group, "nope")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        compute.virtual_machine_scale_sets.get(unique("no-such-group"), "nope")
    assert e.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_scale_set_vms.get(group, "nope", "0")


def test_bad_field_is_invalid_parameter_with_target(compute, group):
    responses = Responses()
    bad = vmss_model(web_image(group), 1)
    bad.sku = cm.Sku(name="Shoal_NotASize", capacity=1)
    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_sets.begin_create_or_update(
            group, unique("web"), bad, raw_response_hook=responses
        )
    assert e.value.status_code == 400
    assert e.value.error.code == "InvalidParameter"
    assert e.value.error.target == "sku.name"
    # One answer, no Retry-After: the client did not retry a 4xx.
    assert responses.seen == [(400, None)]

    too_big = vmss_model(web_image(group), 1000)
    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_sets.begin_create_or_update(group, unique("web"), too_big)
    assert e.value.error.code == "InvalidParameter" and e.value.error.target == "sku.capacity"

    wrong_type = {"location": "local", "sku": {"name": SKU, "capacity": "three"}}
    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_sets.begin_create_or_update(group, unique("web"), wrong_type)
    assert e.value.status_code == 400 and e.value.error.target


def test_conflicting_change_is_resource_exists_error(compute, group):
    # Azure answers 409 (PropertyChangeNotAllowed) for a property that cannot change after
    # create; the SDK maps 409 to ResourceExistsError.
    name = unique("web")
    create_vmss(compute, group, name, capacity=1)
    with pytest.raises(ResourceExistsError) as e:
        compute.virtual_machine_scale_sets.begin_update(
            group, name, {"properties": {"platformFaultDomainCount": 3}}
        ).result(timeout=DEADLINE)
    assert e.value.status_code == 409
    assert e.value.error.code == "PropertyChangeNotAllowed"
    assert e.value.error.target == "properties.platformFaultDomainCount"
    assert compute.virtual_machine_scale_sets.get(group, name).properties.provisioning_state == "Succeeded"


def test_action_on_missing_instance(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=1)
    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_sets.begin_restart(
            group, name, cm.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["7"])
        ).result(timeout=DEADLINE)
    assert e.value.error.code == "InvalidParameter" and e.value.error.target == "instanceIds"
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_scale_set_vms.begin_restart(group, name, "7").result(timeout=DEADLINE)


def test_failed_operation_raises_with_the_reason(compute, group):
    # An image whose command exits at once: after Shoal's restart attempts the create
    # operation ends Failed, and the poller raises with the operation's ARM error.
    from conftest import SUBSCRIPTION, shoal_cli, vmss_model

    shoal_cli(
        "image", "create", "-g", group, "--gallery", "apps", "--name", "broken", "--version", "1.0.0",
        "--dir", "examples/web", "--command", "echo failing on purpose; exit 3", "--port", "8080",
    )
    image = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/"
        "Microsoft.Compute/galleries/apps/images/broken/versions/1.0.0"
    )
    name = unique("broken")
    poller = compute.virtual_machine_scale_sets.begin_create_or_update(group, name, vmss_model(image, 1))
    with pytest.raises(HttpResponseError) as e:
        poller.result(timeout=DEADLINE)
    assert poller.status().lower() == "failed"
    assert e.value.error is not None and e.value.error.code == "VMStartFailed", e.value
    assert e.value.error.message
    vm = compute.virtual_machine_scale_set_vms.get(group, name, "0")
    assert vm.properties.provisioning_state == "Failed"
