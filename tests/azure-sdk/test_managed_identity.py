"""Issue 11: a scale set's system-assigned identity, through the real SDK: an unchanged
`ManagedIdentityCredential()` given the instance's own IDENTITY_ENDPOINT and
IDENTITY_HEADER (read from the instance process's environment, as the workload inside
sees them; tests/e2e/identity.rs makes the same calls from inside an instance) drives a
`ComputeManagementClient`. With Reader on its own set it reads the set and is refused the
delete; the set's `identity.principalId` is what the role assignment names. A
user-assigned identity (azure-mgmt-msi) is named by `client_id`, and only a caller who may
assign it (`…/userAssignedIdentities/assign/action`) can give it to a set."""

import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi import models as mm

from conftest import (
    DEADLINE,
    SUBSCRIPTION,
    arm_request,
    http_client_kwargs,
    owner_token,
    service_principal,
    shoal_ext,
    unique,
    vmss_model,
    wait_for,
    web_image,
)


def instance_environment(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


def grant(role_id, scope, principal_id):
    status, body, _ = arm_request(
        "PUT",
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        {"properties": {
            "roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/"
                                f"roleDefinitions/{role_id}",
            "principalId": principal_id,
        }},
        owner_token(),
    )
    assert status == 201, body


READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def reads_but_cannot_delete(as_instance, group, name):
    """With Reader on set `name`, the instance's client reads it (once the role assignment
    applies) and is refused its deletion."""

    def reads():
        try:
            return as_instance.virtual_machine_scale_sets.get(group, name).name == name
        except HttpResponseError as e:  # the role assignment may take a moment to apply
            if e.status_code != 403:
                raise
            return False

    wait_for(f"the identity reads set {name}", reads)
    with pytest.raises(HttpResponseError) as refused:
        as_instance.virtual_machine_scale_sets.begin_delete(group, name)
    assert refused.value.status_code == 403


def test_managed_identity_credential_gets_the_sets_identity_with_its_role(
    compute, endpoint, group, monkeypatch
):
    model = vmss_model(web_image(group), 1)
    model.identity = cm.VirtualMachineScaleSetIdentity(type="SystemAssigned")
    created = compute.virtual_machine_scale_sets.begin_create_or_update(group, "mi", model).result(
        timeout=DEADLINE
    )
    assert created.identity is not None and created.identity.principal_id, created.identity
    grant(READER, created.id, created.identity.principal_id)

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

    reads_but_cannot_delete(as_instance, group, "mi")
    assert compute.virtual_machine_scale_sets.get(group, "mi").name == "mi"


def test_a_user_assigned_identity_is_lent_only_by_who_may_assign_it_and_named_by_client_id(
    compute, endpoint, credential, group, monkeypatch
):
    msi = ManagedServiceIdentityClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())
    uai = msi.user_assigned_identities.create_or_update(group, "web-id", mm.Identity(location="local"))
    assert uai.principal_id and uai.client_id and uai.tenant_id, uai
    tagged = msi.user_assigned_identities.create_or_update(
        group, "web-id", mm.Identity(location="local", tags={"team": "web"})
    )
    assert (tagged.principal_id, tagged.client_id) == (uai.principal_id, uai.client_id), "kept across updates"
    assert [i.name for i in msi.user_assigned_identities.list_by_resource_group(group)] == ["web-id"]

    model = vmss_model(web_image(group), 1)
    # An identity that does not exist: refused, nothing made.
    missing = uai.id.replace("web-id", "nope")
    model.identity = cm.VirtualMachineScaleSetIdentity(
        type="UserAssigned", user_assigned_identities={missing: cm.UserAssignedIdentitiesValue()}
    )
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machine_scale_sets.begin_create_or_update(group, "uai", model)
    assert (refused.value.status_code, refused.value.error.code) == (400, "FailedIdentityOperation")

    # Who may write scale sets but not assign the identity cannot lend it to one.
    model.identity = cm.VirtualMachineScaleSetIdentity(
        type="UserAssigned", user_assigned_identities={uai.id: cm.UserAssignedIdentitiesValue()}
    )
    vm_contributor = service_principal(
        unique("vmc"), "Virtual Machine Contributor", f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
    )
    as_vmc = ComputeManagementClient(vm_contributor, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())
    with pytest.raises(HttpResponseError) as linked:
        as_vmc.virtual_machine_scale_sets.begin_create_or_update(group, "uai", model)
    assert (linked.value.status_code, linked.value.error.code) == (403, "LinkedAuthorizationFailed")
    assert not list(compute.virtual_machine_scale_sets.list(group)), "the refused create made nothing"

    created = compute.virtual_machine_scale_sets.begin_create_or_update(group, "uai", model).result(
        timeout=DEADLINE
    )
    shown = created.identity.user_assigned_identities[uai.id]
    assert (shown.principal_id, shown.client_id) == (uai.principal_id, uai.client_id)
    grant(READER, created.id, uai.principal_id)

    def pid():
        vms = list(compute.virtual_machine_scale_set_vms.list(group, "uai"))
        return vms and shoal_ext(vms[0]).get("pid")

    env = instance_environment(wait_for("the instance runs", pid))
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
    as_instance = ComputeManagementClient(
        ManagedIdentityCredential(client_id=uai.client_id), SUBSCRIPTION, base_url=endpoint, **http_client_kwargs()
    )

    reads_but_cannot_delete(as_instance, group, "uai")
    # An identity the set was not given is not handed out.
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id=str(uuid.uuid4())).get_token("https://management.azure.com/.default")
