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


def test_etag_match_conditions(compute, group):
    # Optimistic concurrency as the SDK offers it: etag + match_condition become
    # If-Match / If-None-Match, and a 412 maps to the exception the condition implies.
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError

    name = unique("web")
    create_vmss(compute, group, name, capacity=1)
    vmss = compute.virtual_machine_scale_sets
    seen = vmss.get(group, name)
    assert seen.etag

    # Someone else changes the set: our etag is stale, the update is refused.
    vmss.begin_update(group, name, {"tags": {"by": "someone else"}}).result(timeout=DEADLINE)
    with pytest.raises(ResourceModifiedError) as e:
        vmss.begin_update(
            group, name, {"tags": {"by": "me"}}, etag=seen.etag, match_condition=MatchConditions.IfNotModified
        )
    assert e.value.status_code == 412 and e.value.error.code == "PreconditionFailed"
    assert vmss.get(group, name).tags == {"by": "someone else"}

    # With the current etag it goes through.
    current = vmss.get(group, name).etag
    updated = vmss.begin_update(
        group, name, {"tags": {"by": "me"}}, etag=current, match_condition=MatchConditions.IfNotModified
    ).result(timeout=DEADLINE)
    assert updated.tags == {"by": "me"}

    # Create-only (If-None-Match: *) on an existing set.
    with pytest.raises(ResourceExistsError):
        vmss.begin_create_or_update(
            group, name, vmss_model(web_image(group), 1), etag="*", match_condition=MatchConditions.IfMissing
        )
