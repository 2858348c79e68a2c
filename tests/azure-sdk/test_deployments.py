"""ARM template deployments (issue 15) with ResourceManagementClient.deployments: a
hand-written template with a load balancer and a copy loop of scale sets over two gallery
versions succeeds with its outputs and its instances answer; the same template with one
unsupported expression is refused as InvalidTemplate naming it and where it is."""

import copy
import socket

import pytest
from azure.core.exceptions import HttpResponseError

from azure.mgmt.resource.deployments import DeploymentsMgmtClient

from conftest import DEADLINE, SKU, SUBSCRIPTION, answers, http_client_kwargs, instances, unique, wait_for, web_image


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def template(port):
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "versions": {"type": "array"},
            "port": {"type": "int"},
            "prefix": {"type": "string", "defaultValue": "web"},
        },
        "variables": {
            "lbName": "[concat(parameters('prefix'), '-lb')]",
            "poolId": "[resourceId('Microsoft.Network/loadBalancers/backendAddressPools', variables('lbName'), 'pool')]",
        },
        "resources": [
            {
                "type": "Microsoft.Network/loadBalancers",
                "apiVersion": "2024-05-01",
                "name": "[variables('lbName')]",
                "location": "[resourceGroup().location]",
                "properties": {
                    "frontendIPConfigurations": [{"name": "fe"}],
                    "backendAddressPools": [{"name": "pool"}],
                    "loadBalancingRules": [{"name": "http", "properties": {
                        "frontendIPConfiguration": {"id": "fe"},
                        "backendAddressPool": {"id": "pool"},
                        "protocol": "Tcp", "frontendPort": "[parameters('port')]", "backendPort": 8080}}],
                },
            },
            {
                "type": "Microsoft.Compute/virtualMachineScaleSets",
                "apiVersion": "2024-07-01",
                "name": "[format('{0}-{1}', parameters('prefix'), copyIndex())]",
                "location": "[resourceGroup().location]",
                "copy": {"name": "sets", "count": "[length(parameters('versions'))]"},
                "dependsOn": ["[resourceId('Microsoft.Network/loadBalancers', variables('lbName'))]"],
                "sku": {"name": SKU, "capacity": 1},
                "properties": {
                    "upgradePolicy": {"mode": "Manual"},
                    "virtualMachineProfile": {
                        "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser"},
                        "storageProfile": {"imageReference": {"id": "[resourceId('Microsoft.Compute/galleries/images/versions', 'apps', 'web', parameters('versions')[copyIndex()])]"}},
                        "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                            "primary": True,
                            "ipConfigurations": [{"name": "ip", "properties": {
                                "loadBalancerBackendAddressPools": [{"id": "[variables('poolId')]"}]}}]}}]},
                    },
                },
            },
        ],
        "outputs": {
            "lbId": {"type": "string", "value": "[resourceId('Microsoft.Network/loadBalancers', variables('lbName'))]"},
            "sets": {"type": "int", "value": "[length(parameters('versions'))]"},
            "unique": {"type": "string", "value": "[uniqueString(resourceGroup().id)]"},
        },
    }


def good_template(port):
    return copy.deepcopy(template(port))


@pytest.fixture(scope="module")
def deployments(endpoint, credential):
    """azure-mgmt-resource 26 moved deployments to azure-mgmt-resource-deployments."""
    return DeploymentsMgmtClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())


def parameters(port):
    return {"versions": {"value": ["1.0.0", "1.1.0"]}, "port": {"value": port}}


def test_template_with_copy_loop_deploys_sets_that_answer(deployments, compute, group):
    web_image(group, "1.0.0")
    web_image(group, "1.1.0")
    port = free_port()
    name = unique("dep")
    poller = deployments.deployments.begin_create_or_update(
        group, name,
        {"properties": {"mode": "Incremental", "template": good_template(port), "parameters": parameters(port)}},
    )
    dep = poller.result(timeout=DEADLINE)
    assert dep.properties.provisioning_state == "Succeeded"
    outputs = dep.properties.outputs
    assert outputs["lbId"]["value"].endswith(f"/resourceGroups/{group}/providers/Microsoft.Network/loadBalancers/web-lb")
    assert outputs["sets"]["value"] == 2
    assert len(outputs["unique"]["value"]) == 13
    for i, version in enumerate(["1.0.0", "1.1.0"]):
        vmss = compute.virtual_machine_scale_sets.get(group, f"web-{i}")
        assert vmss.virtual_machine_profile.storage_profile.image_reference.id.endswith(f"/versions/{version}")
        vm = instances(compute, group, f"web-{i}")[0]
        wait_for(f"web-{i} instance to answer", lambda: answers(compute, group, f"web-{i}", vm.instance_id))
    ops = list(deployments.deployment_operations.list(group, name))
    assert {o.properties.target_resource.resource_name for o in ops} == {"web-lb", "web-0", "web-1"}
    assert name in [d.name for d in deployments.deployments.list_by_resource_group(group)]


def test_unsupported_expression_is_invalid_template_naming_it(deployments, group):
    port = free_port()
    bad = good_template(port)
    bad["resources"][1]["properties"]["virtualMachineProfile"]["osProfile"]["computerNamePrefix"] = "[base64('web')]"
    body = {"properties": {"mode": "Incremental", "template": bad, "parameters": parameters(port)}}
    with pytest.raises(HttpResponseError) as e:
        deployments.deployments.begin_create_or_update(group, unique("bad"), body).result(timeout=DEADLINE)
    assert e.value.error.code == "InvalidTemplate"
    assert "'base64'" in e.value.error.message
    assert e.value.error.target == "resources[1].properties.virtualMachineProfile.osProfile.computerNamePrefix"
    with pytest.raises(HttpResponseError) as e:
        deployments.deployments.begin_validate(group, unique("bad"), body).result(timeout=DEADLINE)
    assert e.value.error.code == "InvalidTemplate"
