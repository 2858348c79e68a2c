"""virtual_machine_scale_set_vms through azure-mgmt-compute 39: one instance at a time."""

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute import models as cm

from conftest import DEADLINE, answers, create_vmss, http_get, power_state, shoal_ext, unique


@pytest.fixture
def vmss(compute, group):
    name = unique("web")
    create_vmss(compute, group, name, capacity=2)
    return group, name


def test_get_and_instance_view(compute, vmss):
    group, name = vmss
    vm = compute.virtual_machine_scale_set_vms.get(group, name, "1")
    assert vm.instance_id == "1"
    assert vm.name == f"{name}_1"
    assert vm.type == "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
    assert vm.properties.provisioning_state == "Succeeded"
    assert vm.properties.latest_model_applied is True
    assert vm.properties.protection_policy.protect_from_scale_in is False
    assert vm.sku.name

    view = compute.virtual_machine_scale_set_vms.get_instance_view(group, name, "1")
    assert power_state(view) == "running"
    assert view.computer_name
    assert [s.code for s in view.statuses][0] == "ProvisioningState/succeeded"
    assert answers(compute, group, name, "1") == "instance 1"


def test_protection_policy_is_honoured(compute, vmss):
    group, name = vmss
    vms = compute.virtual_machine_scale_set_vms
    vm = vms.get(group, name, "1")
    vm.properties.protection_policy = cm.VirtualMachineScaleSetVMProtectionPolicy(
        protect_from_scale_in=True, protect_from_scale_set_actions=True
    )
    updated = vms.begin_update(group, name, "1", vm).result(timeout=DEADLINE)
    assert updated.properties.protection_policy.protect_from_scale_in is True
    assert vms.get(group, name, "1").properties.protection_policy.protect_from_scale_set_actions is True

    # A set-wide power-off leaves the instance protected from set actions running.
    compute.virtual_machine_scale_sets.begin_power_off(group, name).result(timeout=DEADLINE)
    assert power_state(vms.get_instance_view(group, name, "0")) == "stopped"
    assert power_state(vms.get_instance_view(group, name, "1")) == "running"
    assert answers(compute, group, name, "1") == "instance 1"

    # Scaling in to one instance keeps the protected one.
    compute.virtual_machine_scale_sets.begin_start(group, name).result(timeout=DEADLINE)
    compute.virtual_machine_scale_sets.begin_update(group, name, {"sku": {"capacity": 1}}).result(timeout=DEADLINE)
    assert [vm.instance_id for vm in vms.list(group, name)] == ["1"]


def test_instance_actions(compute, vmss):
    group, name = vmss
    vms = compute.virtual_machine_scale_set_vms
    pid = shoal_ext(vms.get(group, name, "0"))["pid"]

    vms.begin_power_off(group, name, "0").result(timeout=DEADLINE)
    vm = vms.get(group, name, "0", expand="instanceView")
    assert power_state(vm) == "stopped" and shoal_ext(vm)["address"] is None
    assert power_state(vms.get_instance_view(group, name, "1")) == "running"

    vms.begin_start(group, name, "0").result(timeout=DEADLINE)
    assert answers(compute, group, name, "0") == "instance 0"

    before = shoal_ext(vms.get(group, name, "0"))["pid"]
    assert before != pid
    vms.begin_restart(group, name, "0").result(timeout=DEADLINE)
    after_restart = shoal_ext(vms.get(group, name, "0"))["pid"]
    assert after_restart != before
    assert answers(compute, group, name, "0") == "instance 0"

    vms.begin_reimage(group, name, "0").result(timeout=DEADLINE)
    assert shoal_ext(vms.get(group, name, "0"))["pid"] != after_restart
    assert answers(compute, group, name, "0") == "instance 0"


def test_delete_one_instance(compute, vmss):
    group, name = vmss
    vms = compute.virtual_machine_scale_set_vms
    address = shoal_ext(vms.get(group, name, "0"))["address"]
    vms.begin_delete(group, name, "0").result(timeout=DEADLINE)
    with pytest.raises(ResourceNotFoundError):
        vms.get(group, name, "0")
    assert [vm.instance_id for vm in vms.list(group, name)] == ["1"]
    assert compute.virtual_machine_scale_sets.get(group, name).sku.capacity == 1
    with pytest.raises(OSError):
        http_get(address, timeout=2)
