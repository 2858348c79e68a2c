"""virtual_machine_scale_sets through azure-mgmt-compute 39: create, read, list, PATCH,
PUT replacing the model, set-wide actions, instance lists and views, delete. Every test checks the effect a user
would check: the instances exist and answer HTTP at the address Shoal reports."""

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute import models as cm

from conftest import (
    DEADLINE,
    LOCATION,
    SKU,
    answers,
    create_vmss,
    http_get,
    instances,
    power_state,
    shoal_ext,
    unique,
    vmss_model,
    wait_for,
    web_image,
)


def ids(compute, group, name):
    return sorted(int(vm.instance_id) for vm in compute.virtual_machine_scale_set_vms.list(group, name))


def test_create_get_list_and_instances_answer(compute, group):
    name = unique("web")
    vmss = create_vmss(compute, group, name, capacity=2)

    # The poller's final resource is the model, with the new-style nested properties.
    assert vmss.name == name
    assert vmss.type == "Microsoft.Compute/virtualMachineScaleSets"
    assert vmss.location == LOCATION
    assert vmss.sku.name == SKU and vmss.sku.capacity == 2
    assert vmss.properties.provisioning_state == "Succeeded"
    assert vmss.properties.unique_id
    assert vmss.properties.upgrade_policy.mode == "Manual"
    assert vmss.id.endswith(f"/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}")

    got = compute.virtual_machine_scale_sets.get(group, name)
    assert got.id == vmss.id and got.properties.unique_id == vmss.properties.unique_id
    assert [s.name for s in compute.virtual_machine_scale_sets.list(group)] == [name]
    assert name in [s.name for s in compute.virtual_machine_scale_sets.list_all()]

    vms = instances(compute, group, name)
    assert sorted(vm.instance_id for vm in vms) == ["0", "1"]
    for vm in vms:
        assert vm.properties.provisioning_state == "Succeeded"
        assert vm.properties.latest_model_applied is True
        assert power_state(vm) == "running"  # $expand=instanceView filled the view in
        assert http_get(shoal_ext(vm)["address"]) == (200, f"instance {vm.instance_id}")


def test_patch_answers_200_and_scales_out_and_in(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=1)

    # begin_update is a PATCH; the SDK accepts only 200 as its first answer.
    updated = compute.virtual_machine_scale_sets.begin_update(
        group, name, cm.VirtualMachineScaleSetUpdate(sku=cm.Sku(capacity=3))
    ).result(timeout=DEADLINE)
    assert updated.sku.capacity == 3
    assert updated.properties.provisioning_state == "Succeeded"
    assert ids(compute, group, name) == [0, 1, 2]
    for i in ("0", "1", "2"):
        assert answers(compute, group, name, i) == f"instance {i}"

    # Scale in to 1 with the newest instance protected: the default policy removes the
    # highest ids, but never a protected one.
    vm = compute.virtual_machine_scale_set_vms.get(group, name, "2")
    vm.properties.protection_policy = cm.VirtualMachineScaleSetVMProtectionPolicy(protect_from_scale_in=True)
    vm = compute.virtual_machine_scale_set_vms.begin_update(group, name, "2", vm).result(timeout=DEADLINE)
    assert vm.properties.protection_policy.protect_from_scale_in is True

    compute.virtual_machine_scale_sets.begin_update(
        group, name, {"sku": {"capacity": 1}}
    ).result(timeout=DEADLINE)
    assert compute.virtual_machine_scale_sets.get(group, name).sku.capacity == 1
    assert ids(compute, group, name) == [2]
    assert answers(compute, group, name, "2") == "instance 2"


def test_put_replaces_the_model_and_patch_merges(compute, group):
    # ARM semantics: a PUT (begin_create_or_update) replaces the model, so a property it
    # omits is removed; a PATCH (begin_update) merges, so what it omits is kept.
    name = unique("web")
    vmss = compute.virtual_machine_scale_sets
    model = vmss_model(web_image(group), capacity=1)
    model.properties.virtual_machine_profile.extension_profile = cm.VirtualMachineScaleSetExtensionProfile(
        extensions=[
            cm.VirtualMachineScaleSetExtension(
                name="note",
                properties=cm.VirtualMachineScaleSetExtensionProperties(
                    publisher="Microsoft.Azure.Extensions",
                    type="CustomScript",
                    type_handler_version="2.1",
                    settings={"note": "kept by a PATCH"},
                ),
            )
        ]
    )
    created = vmss.begin_create_or_update(group, name, model).result(timeout=DEADLINE)
    assert [e.name for e in created.properties.virtual_machine_profile.extension_profile.extensions] == ["note"]

    # PATCH without extensionProfile: kept (and tags replaced whole).
    patched = vmss.begin_update(group, name, cm.VirtualMachineScaleSetUpdate(tags={"tier": "front"})).result(
        timeout=DEADLINE
    )
    assert patched.tags == {"tier": "front"}
    assert [e.name for e in patched.properties.virtual_machine_profile.extension_profile.extensions] == ["note"]

    # PUT of the model as read, minus extensionProfile: removed. What a PUT may omit and
    # keep (capacity, read-only properties) stays; the instance is untouched.
    current = vmss.get(group, name)
    current.properties.virtual_machine_profile.extension_profile = None
    replaced = vmss.begin_create_or_update(group, name, current).result(timeout=DEADLINE)
    assert replaced.properties.virtual_machine_profile.extension_profile is None
    got = vmss.get(group, name)
    assert got.properties.virtual_machine_profile.extension_profile is None
    assert got.sku.capacity == 1
    assert got.tags == {"tier": "front"}
    assert got.properties.unique_id == created.properties.unique_id
    assert ids(compute, group, name) == [0]
    assert answers(compute, group, name, "0") == "instance 0"


def test_set_wide_power_actions(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=2)
    vmss = compute.virtual_machine_scale_sets
    pid = {vm.instance_id: shoal_ext(vm)["pid"] for vm in instances(compute, group, name)}

    # No instance ids: the action applies to every instance (the SDK sends no body).
    vmss.begin_power_off(group, name).result(timeout=DEADLINE)
    for vm in instances(compute, group, name):
        assert power_state(vm) == "stopped"
        assert shoal_ext(vm)["address"] is None

    vmss.begin_start(group, name).result(timeout=DEADLINE)
    for vm in instances(compute, group, name):
        assert power_state(vm) == "running"
        assert http_get(shoal_ext(vm)["address"])[1] == f"instance {vm.instance_id}"

    vmss.begin_deallocate(group, name, cm.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["1"])).result(
        timeout=DEADLINE
    )
    states = {vm.instance_id: power_state(vm) for vm in instances(compute, group, name)}
    assert states == {"0": "running", "1": "deallocated"}
    vmss.begin_start(group, name, cm.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["1"])).result(timeout=DEADLINE)
    assert answers(compute, group, name, "1") == "instance 1"

    # restart and reimage start a new process; the instance answers again.
    new_pid = dict(pid)
    vmss.begin_restart(group, name, cm.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["0"])).result(timeout=DEADLINE)
    new_pid["0"] = shoal_ext(compute.virtual_machine_scale_set_vms.get(group, name, "0"))["pid"]
    assert new_pid["0"] != pid["0"]
    assert answers(compute, group, name, "0") == "instance 0"

    vmss.begin_reimage(group, name).result(timeout=DEADLINE)
    vmss.begin_reimage_all(group, name, cm.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["1"])).result(
        timeout=DEADLINE
    )
    for vm in instances(compute, group, name):
        assert shoal_ext(vm)["pid"] != new_pid[vm.instance_id]
        assert http_get(shoal_ext(vm)["address"])[1] == f"instance {vm.instance_id}"

    view = vmss.get_instance_view(group, name)
    summary = {s.code: s.count for s in view.virtual_machine.statuses_summary}
    assert summary.get("PowerState/running") == 2
    assert view.statuses[0].code == "ProvisioningState/succeeded"


def test_update_instances_moves_to_latest_model(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=2)
    newer = web_image(group, "1.0.1")
    compute.virtual_machine_scale_sets.begin_update(
        group,
        name,
        {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": newer}}}}},
    ).result(timeout=DEADLINE)
    applied = {vm.instance_id: vm.properties.latest_model_applied for vm in instances(compute, group, name)}
    assert applied == {"0": False, "1": False}  # upgradePolicy Manual: nothing moves yet

    compute.virtual_machine_scale_sets.begin_update_instances(
        group, name, cm.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0"])
    ).result(timeout=DEADLINE)
    vms = {vm.instance_id: vm for vm in instances(compute, group, name)}
    assert vms["0"].properties.latest_model_applied is True
    assert shoal_ext(vms["0"])["imageVersion"] == "1.0.1"
    assert vms["1"].properties.latest_model_applied is False
    assert answers(compute, group, name, "0") == "instance 0"


def test_delete_instances_lowers_capacity(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=3)
    gone = compute.virtual_machine_scale_set_vms.get(group, name, "1")
    gone_address = shoal_ext(gone)["address"]

    compute.virtual_machine_scale_sets.begin_delete_instances(
        group, name, cm.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["1"])
    ).result(timeout=DEADLINE)
    assert ids(compute, group, name) == [0, 2]
    assert compute.virtual_machine_scale_sets.get(group, name).sku.capacity == 2
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_scale_set_vms.get(group, name, "1")
    with pytest.raises(OSError):
        http_get(gone_address, timeout=2)


def test_list_skus(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=1)
    skus = list(compute.virtual_machine_scale_sets.list_skus(group, name))
    names = {s.sku.name for s in skus}
    assert SKU in names and "Standard_B1s" in names
    assert all(s.resource_type == "Microsoft.Compute/virtualMachineScaleSets" for s in skus)


def test_delete_stops_every_instance(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=2)
    addresses = [shoal_ext(vm)["address"] for vm in instances(compute, group, name)]

    compute.virtual_machine_scale_sets.begin_delete(group, name).result(timeout=DEADLINE)
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_scale_sets.get(group, name)
    assert name not in [s.name for s in compute.virtual_machine_scale_sets.list(group)]
    for address in addresses:
        with pytest.raises(OSError):
            http_get(address, timeout=2)
    # Deleting what is already gone is not an error (204).
    compute.virtual_machine_scale_sets.begin_delete(group, name).result(timeout=DEADLINE)


def test_custom_data_reaches_the_instance(compute, group):
    import base64

    name = unique("web")
    data = base64.b64encode(b"hello from the sdk").decode()
    create_vmss(compute, group, name, capacity=1, custom_data=data)
    vm = compute.virtual_machine_scale_set_vms.get(group, name, "0")
    assert http_get(shoal_ext(vm)["address"], "/custom-data") == (200, "hello from the sdk")
