"""Issue 11: a scale set's system-assigned identity, through the real SDK: an unchanged
`ManagedIdentityCredential()` given the instance's own IDENTITY_ENDPOINT and
IDENTITY_HEADER (read from the instance process's environment, as the workload inside
sees them; tests/e2e/identity.rs makes the same calls from inside an instance) drives a
`ComputeManagementClient`. With Reader on its own set it reads the set and is refused the
delete; the set's `identity.principalId` is what the role assignment names."""

import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm

from conftest import (
    DEADLINE,
    SUBSCRIPTION,
    arm_request,
    http_client_kwargs,
    owner_token,
    shoal_ext,
    vmss_model,
    wait_for,
    web_image,
)


def instance_environment(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


def test_managed_identity_credential_gets_the_sets_identity_with_its_role(
    compute, endpoint, group, monkeypatch
):
    model = vmss_model(web_image(group), 1)
    model.identity = cm.VirtualMachineScaleSetIdentity(type="SystemAssigned")
    created = compute.virtual_machine_scale_sets.begin_create_or_update(group, "mi", model).result(
        timeout=DEADLINE
    )
    assert created.identity is not None and created.identity.principal_id, created.identity
    status, body, _ = arm_request(
        "PUT",
        f"{created.id}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        {"properties": {
            "roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/"
                                "roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principalId": created.identity.principal_id,
        }},
        owner_token(),
    )
    assert status == 201, body

    def pid():
        vms = list(compute.virtual_machine_scale_set_vms.list(group, "mi"))
        return vms and shoal_ext(vms[0]).get("pid")

    env = instance_environment(wait_for("the instance runs", pid))
    if "IDENTITY_ENDPOINT" not in env:
        pytest.fail(f"the instance has no IDENTITY_ENDPOINT: {sorted(env)}")
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
    identity = ManagedIdentityCredential()
    as_instance = ComputeManagementClient(identity, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())

    def reads():
        try:
            return as_instance.virtual_machine_scale_sets.get(group, "mi").name == "mi"
        except HttpResponseError as e:  # the role assignment may take a moment to apply
            if e.status_code != 403:
                raise
            return False

    wait_for("the identity reads its set", reads)
    with pytest.raises(HttpResponseError) as refused:
        as_instance.virtual_machine_scale_sets.begin_delete(group, "mi")
    assert refused.value.status_code == 403
    assert compute.virtual_machine_scale_sets.get(group, "mi").name == "mi"
