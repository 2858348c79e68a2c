"""virtual_machine_scale_set_rolling_upgrades: Shoal has no rolling upgrade engine yet, so
it answers what Azure answers when there is nothing to upgrade (see
crates/shoal-api/src/rolling_upgrades.rs), and refuses honestly when there would be."""

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from conftest import DEADLINE, SUBSCRIPTION, answers, instances, shoal_ext, unique, vmss_model, web_image


def test_os_upgrade_with_nothing_to_upgrade(compute, group):
    name = unique("web")
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, vmss_model(web_image(group), 2, upgrade_mode="Rolling")
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


def test_os_upgrade_refused_when_a_newer_image_would_roll_out(compute, group):
    name = unique("web")
    web_image(group)
    latest_image = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/galleries/apps/images/web"
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, vmss_model(latest_image, 1, upgrade_mode="Rolling")
    ).result(timeout=DEADLINE)
    web_image(group, "1.0.1")  # the image the set follows has a newer version now

    with pytest.raises(HttpResponseError) as e:
        compute.virtual_machine_scale_set_rolling_upgrades.begin_start_os_upgrade(group, name).result(
            timeout=DEADLINE
        )
    assert e.value.error.code == "OperationNotAllowed"
    assert "1.0.1" in e.value.message
    vm = compute.virtual_machine_scale_set_vms.get(group, name, "0")
    assert shoal_ext(vm)["imageVersion"] == "1.0.0"
