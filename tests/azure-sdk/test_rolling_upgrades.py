"""virtual_machine_scale_set_rolling_upgrades, as Azure behaves: Rolling mode needs a
health source (400 otherwise), an OS rolling upgrade with nothing to do completes at once,
and one with a newer image version rolls it out batch by batch (see
crates/shoal-control/src/rolling/ and crates/shoal-api/src/rolling_upgrades.rs)."""

import azure.mgmt.compute.models as cm
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from conftest import DEADLINE, SUBSCRIPTION, answers, instances, shoal_ext, unique, vmss_model, web_image


def with_health_extension(model):
    """The Application Health extension on the example's `/health`: Rolling mode's health source."""
    model.properties.virtual_machine_profile.extension_profile = cm.VirtualMachineScaleSetExtensionProfile(
        extensions=[
            cm.VirtualMachineScaleSetExtension(
                name="health",
                properties=cm.VirtualMachineScaleSetExtensionProperties(
                    publisher="Microsoft.ManagedServices",
                    type="ApplicationHealthLinux",
                    type_handler_version="1.0",
                    settings={"protocol": "http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 1},
                ),
            )
        ]
    )
    # Shoal's extension property: wait at most 30 s for a batch's health (Azure: 5 min).
    model.properties["shoal"] = {"rollingUpgradeHealthTimeout": "PT30S"}
    return model


def test_rolling_mode_without_a_health_source_is_refused_as_azure_does(compute, group):
    name = unique("web")
    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_sets.begin_create_or_update(
            group, name, vmss_model(web_image(group), 2, upgrade_mode="Rolling")
        ).result(timeout=DEADLINE)
    assert e.value.status_code == 400
    assert e.value.error.code == "BadRequest"
    assert "health probe or health extension was not provided" in e.value.message


def test_os_upgrade_with_nothing_to_upgrade(compute, group):
    name = unique("web")
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, with_health_extension(vmss_model(web_image(group), 2, upgrade_mode="Rolling"))
    ).result(timeout=DEADLINE)
    rolling = compute.virtual_machine_scale_set_rolling_upgrades
    pids = {vm.instance_id: shoal_ext(vm)["pid"] for vm in instances(compute, group, name)}

    # Never upgraded: Azure answers 404 for the latest rolling upgrade.
    with pytest.raises(ResourceNotFoundError):
        rolling.get_latest(group, name)
    # Nothing is running, so there is nothing to cancel (409, Azure's message).
    with pytest.raises(HttpResponseError) as e:
        rolling.begin_cancel(group, name).result(timeout=DEADLINE)
    assert e.value.status_code == 409
    assert "no ongoing Rolling Upgrade to cancel" in e.value.message

    # The set pins version 1.0.0, which every instance runs: the upgrade completes at once.
    assert rolling.begin_start_os_upgrade(group, name).result(timeout=DEADLINE) is None
    latest = rolling.get_latest(group, name)
    assert latest.type == "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"
    assert latest.properties.running_status.code == "Completed"
    assert latest.properties.running_status.last_action == "Start"
    progress = latest.properties.progress
    assert (
        progress.successful_instance_count,
        progress.failed_instance_count,
        progress.in_progress_instance_count,
        progress.pending_instance_count,
    ) == (0, 0, 0, 0)
    assert latest.properties.policy.max_batch_instance_percent == 20

    # Nothing was touched.
    assert {vm.instance_id: shoal_ext(vm)["pid"] for vm in instances(compute, group, name)} == pids
    assert answers(compute, group, name, "0") == "instance 0"
    with pytest.raises(HttpResponseError) as e:
        rolling.begin_cancel(group, name).result(timeout=DEADLINE)
    assert e.value.status_code == 409


def test_os_upgrade_rolls_a_newer_image_version_out(compute, group):
    name = unique("web")
    web_image(group)
    latest_image = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/galleries/apps/images/web"
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, with_health_extension(vmss_model(latest_image, 2, upgrade_mode="Rolling"))
    ).result(timeout=DEADLINE)
    web_image(group, "1.0.1")  # the image the set follows has a newer version now

    compute.virtual_machine_scale_set_rolling_upgrades.begin_start_os_upgrade(group, name).result(
        timeout=DEADLINE
    )
    latest = compute.virtual_machine_scale_set_rolling_upgrades.get_latest(group, name)
    assert latest.properties.running_status.code == "Completed"
    assert latest.properties.progress.successful_instance_count == 2
    assert latest.properties.progress.failed_instance_count == 0
    for vm in instances(compute, group, name):
        assert shoal_ext(vm)["imageVersion"] == "1.0.1"

    # The upgrade is in the set's OS upgrade history.
    history = list(compute.virtual_machine_scale_sets.get_os_upgrade_history(group, name))
    assert len(history) == 1
    assert history[0].properties.running_status.code == "Completed"
    assert history[0].properties.progress.successful_instance_count == 2

    # An extension upgrade restarts every instance once (a new process each), batch by batch.
    pids = {vm.instance_id: shoal_ext(vm)["pid"] for vm in instances(compute, group, name)}
    compute.virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(group, name).result(
        timeout=DEADLINE
    )
    after = {vm.instance_id: shoal_ext(vm)["pid"] for vm in instances(compute, group, name)}
    assert after.keys() == pids.keys() and all(after[i] != pids[i] for i in pids), (pids, after)
