//! The OpenAPI 3.0 document of Shoal's API, served at `GET /openapi.json`.
//!
//! It is built from [`OPERATIONS`], and cannot drift from the router: [`doc_key`] maps
//! every [`Route`] to the operation that documents it with a match that has no wildcard
//! arm (a new route does not compile until it is documented), and the tests below parse
//! every documented path back through [`routes::parse`](crate::routes::parse), check it
//! lands on the route it documents, and send every documented method through the router
//! to check it is served.
//!
//! Request bodies are described as far as Shoal validates them; every error answer is
//! the ARM error shape (`ErrorResponse`), which is what fuzzers check against.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::routes::{Action, Route};

/// One documented operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Groups operations of one route (see [`doc_key`]).
    pub key: &'static str,
    pub method: &'static str,
    /// Path template; `{name}` segments are parameters.
    pub path: Cow<'static, str>,
    pub summary: &'static str,
    /// Request body schema in `components.schemas`, if the operation takes one.
    pub body: Option<&'static str>,
    /// Success status codes.
    pub ok: &'static [u16],
    pub tag: &'static str,
}

const SUB: &str = "/subscriptions/{subscriptionId}";
const RG: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}";

macro_rules! op {
    ($key:expr, $method:expr, $path:expr, $summary:expr, $body:expr, $ok:expr, $tag:expr) => {
        Op {
            key: $key,
            method: $method,
            path: Cow::Borrowed($path),
            summary: $summary,
            body: $body,
            ok: $ok,
            tag: $tag,
        }
    };
}

const GALLERY: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}";
const IMAGE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/images/{galleryImageName}";
const VERSION: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/images/{galleryImageName}/versions/{galleryImageVersionName}";
const VMSS: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}";
const VM: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}";
const LB: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}";
const AUTOSCALE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Insights/autoscalesettings/{autoscaleSettingName}";
const AGW: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/applicationGateways/{applicationGatewayName}";
const UAI: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}";

/// Every operation of the API. Set and instance actions are added by [`operations`].
pub const OPERATIONS: &[Op] = &[
    op!("subscription", "get", SUB, "The subscription", None, &[200], "Resources"),
    op!("subscriptions", "get", "/subscriptions", "Subscriptions", None, &[200], "Resources"),
    op!("tenants", "get", "/tenants", "Tenants", None, &[200], "Resources"),
    op!("metadataEndpoints", "get", "/metadata/endpoints", "The cloud's endpoints (az cloud register)", None, &[200], "Identity"),
    op!("imageAliases", "get", "/metadata/vm-image-aliases", "The VM image alias document", None, &[200], "Identity"),
    op!("oidcConfig", "get", "/{tenantId}/v2.0/.well-known/openid-configuration", "OpenID configuration of the token authority", None, &[200], "Token authority"),
    op!("jwks", "get", "/{tenantId}/discovery/v2.0/keys", "The token signing keys (JWKS)", None, &[200], "Token authority"),
    op!("token", "post", "/{tenantId}/oauth2/v2.0/token", "Client-credentials token (form body)", None, &[200], "Token authority"),
    op!("roleAssignments", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleAssignments", "Role assignments at a scope", None, &[200], "Access control"),
    op!("roleAssignments", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}", "A role assignment", None, &[200], "Access control"),
    op!("roleAssignments", "put", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}", "Assign a role", Some("Resource"), &[200, 201], "Access control"),
    op!("roleAssignments", "delete", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}", "Remove a role assignment", None, &[200, 204], "Access control"),
    op!("roleDefinitions", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleDefinitions", "Built-in role definitions", None, &[200], "Access control"),
    op!("roleDefinitions", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/{roleDefinitionId}", "A role definition", None, &[200], "Access control"),
    op!("permissions", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/permissions", "What the caller may do in a subscription", None, &[200], "Access control"),
    op!("permissions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Authorization/permissions", "What the caller may do in a resource group", None, &[200], "Access control"),
    op!("servicePrincipals", "get", "/providers/Shoal.Directory/servicePrincipals", "Service principals", None, &[200], "Access control"),
    op!("servicePrincipals", "post", "/providers/Shoal.Directory/servicePrincipals", "Create a service principal (its password is in the answer, once)", Some("Resource"), &[201], "Access control"),
    op!("servicePrincipals", "get", "/providers/Shoal.Directory/servicePrincipals/{appId}", "A service principal", None, &[200], "Access control"),
    op!("servicePrincipals", "delete", "/providers/Shoal.Directory/servicePrincipals/{appId}", "Delete a service principal and its role assignments", None, &[204], "Access control"),
    op!("servicePrincipals", "post", "/providers/Shoal.Directory/servicePrincipals/{appId}/resetCredentials", "Replace a service principal's secret", None, &[200], "Access control"),
    op!("locations", "get", "/subscriptions/{subscriptionId}/locations", "Locations", None, &[200], "Resources"),
    op!("groups", "get", "/subscriptions/{subscriptionId}/resourcegroups", "List resource groups", None, &[200], "Resources"),
    op!("group", "get", RG, "Get a resource group", None, &[200], "Resources"),
    op!("group", "head", RG, "Does the resource group exist", None, &[204], "Resources"),
    op!("group", "put", RG, "Create or update a resource group", Some("ResourceGroup"), &[200, 201], "Resources"),
    op!("group", "patch", RG, "Update a resource group's tags", Some("ResourceGroupPatch"), &[200], "Resources"),
    op!("group", "delete", RG, "Delete a resource group and everything in it", None, &[202], "Resources"),
    op!("galleries", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/galleries", "List galleries", None, &[200], "Images"),
    op!("galleries", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries", "List galleries of a group", None, &[200], "Images"),
    op!("gallery", "get", GALLERY, "Get a gallery", None, &[200], "Images"),
    op!("gallery", "put", GALLERY, "Create or update a gallery", Some("Resource"), &[200, 201], "Images"),
    op!("gallery", "patch", GALLERY, "Update a gallery", Some("Resource"), &[200], "Images"),
    op!("gallery", "delete", GALLERY, "Delete an empty gallery", None, &[200, 204], "Images"),
    op!("images", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/images", "List image definitions", None, &[200], "Images"),
    op!("image", "get", IMAGE, "Get an image definition", None, &[200], "Images"),
    op!("image", "put", IMAGE, "Create or update an image definition", Some("Resource"), &[200, 201], "Images"),
    op!("image", "patch", IMAGE, "Update an image definition", Some("Resource"), &[200], "Images"),
    op!("image", "delete", IMAGE, "Delete an image definition without versions", None, &[200, 204], "Images"),
    op!("versions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/images/{galleryImageName}/versions", "List image versions", None, &[200], "Images"),
    op!("version", "get", VERSION, "Get an image version", None, &[200], "Images"),
    op!("version", "put", VERSION, "Create an image version (bundle uploaded first to /shoal/v1/blobs)", Some("Resource"), &[200, 201], "Images"),
    op!("version", "delete", VERSION, "Delete an image version no scale set uses", None, &[200, 202, 204], "Images"),
    op!("resourceSkus", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/skus", "The size catalogue", None, &[200], "Scale sets"),
    op!("scaleSets", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/virtualMachineScaleSets", "List all scale sets", None, &[200], "Scale sets"),
    op!("scaleSets", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets", "List the scale sets of a group", None, &[200], "Scale sets"),
    op!("scaleSets", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/virtualMachineScaleSets", "List the scale sets in a location", None, &[200], "Scale sets"),
    op!("vmSizes", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/vmSizes", "The sizes offered in a location", None, &[200], "Scale sets"),
    op!("scaleSet", "get", VMSS, "Get a scale set", None, &[200], "Scale sets"),
    op!("scaleSet", "put", VMSS, "Create or replace a scale set", Some("VirtualMachineScaleSet"), &[200, 201], "Scale sets"),
    op!("scaleSet", "patch", VMSS, "Update a scale set (merge)", Some("VirtualMachineScaleSetUpdate"), &[200], "Scale sets"),
    op!("scaleSet", "delete", VMSS, "Delete a scale set and its instances", None, &[202, 204], "Scale sets"),
    op!("scaleSetInstanceView", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/instanceView", "A scale set's instance view", None, &[200], "Scale sets"),
    op!("scaleSetSkus", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/skus", "Sizes a scale set can use", None, &[200], "Scale sets"),
    op!("osRollingUpgrade", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/osRollingUpgrade", "Start an OS rolling upgrade", None, &[202], "Rolling upgrades"),
    op!("rollingUpgradeLatest", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/rollingUpgrades/latest", "The latest rolling upgrade", None, &[200], "Rolling upgrades"),
    op!("rollingUpgradeCancel", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/rollingUpgrades/cancel", "Cancel the running rolling upgrade", None, &[202], "Rolling upgrades"),
    op!("osUpgradeHistory", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/osUpgradeHistory", "Past OS image upgrades", None, &[200], "Rolling upgrades"),
    op!("setExtensions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensions", "The set's extensions", None, &[200], "Scale sets"),
    op!("setExtensions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensions/{vmssExtensionName}", "One extension of the set", None, &[200], "Scale sets"),
    op!("setExtensions", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensions/{vmssExtensionName}", "Add or replace an extension in the set's model", Some("Resource"), &[200, 201], "Scale sets"),
    op!("setExtensions", "patch", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensions/{vmssExtensionName}", "Change an extension of the set's model", Some("Resource"), &[200], "Scale sets"),
    op!("setExtensions", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensions/{vmssExtensionName}", "Remove an extension from the set's model", None, &[202, 204], "Scale sets"),
    op!("instanceExtensions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/extensions", "An instance's extensions", None, &[200], "Instances"),
    op!("instanceExtensions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/extensions/{vmExtensionName}", "One extension of an instance", None, &[200], "Instances"),
    op!("instanceExtensions", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/extensions/{vmExtensionName}", "Add or replace an instance's own extension (stored)", Some("Resource"), &[200, 201], "Instances"),
    op!("instanceExtensions", "patch", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/extensions/{vmExtensionName}", "Change an instance's extension", Some("Resource"), &[200], "Instances"),
    op!("instanceExtensions", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/extensions/{vmExtensionName}", "Remove an instance's own extension", None, &[200, 204], "Instances"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/reapply", "Reapply the model (nothing to do: the controller applies it continuously)", None, &[200], "Scale sets"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/approveRollingUpgrade", "Approve a deferred rolling upgrade (none is ever deferred)", None, &[200], "Scale sets"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/convertToSinglePlacementGroup", "Set singlePlacementGroup", None, &[200], "Scale sets"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/setOrchestrationServiceState", "Suspend or resume automatic repairs", None, &[200], "Scale sets"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/forceRecoveryServiceFabricPlatformUpdateDomainWalk", "Service Fabric only: refused", None, &[409], "Scale sets"),
    op!("setOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/scaleOut", "Scale out to a larger capacity", None, &[202], "Scale sets"),
    op!("instanceOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/simulateEviction", "Evict a Spot instance as its eviction policy says", None, &[204], "Scale sets"),
    op!("instanceOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/retrieveBootDiagnosticsData", "Where the instance's serial log is", None, &[200], "Scale sets"),
    op!("instanceOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/approveRollingUpgrade", "Approve a deferred upgrade of the instance (none is ever deferred)", None, &[200], "Scale sets"),
    op!("instanceOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/reapply", "Reapply the model to the instance", None, &[200], "Scale sets"),
    op!("instanceOperation", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/attachDetachDataDisks", "Managed data disks (Shoal has none: 404)", None, &[404], "Scale sets"),
    op!("extensionRollingUpgrade", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/extensionRollingUpgrade", "Restart the instances batch by batch with the set's extensions", None, &[202], "Rolling upgrades"),
    op!("instances", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines", "List instances ($expand=instanceView)", None, &[200], "Instances"),
    op!("instance", "get", VM, "Get an instance", None, &[200], "Instances"),
    op!("instance", "put", VM, "Update an instance (protection policy)", Some("VirtualMachineScaleSetVM"), &[200], "Instances"),
    op!("instance", "patch", VM, "Update an instance (protection policy)", Some("VirtualMachineScaleSetVM"), &[200], "Instances"),
    op!("instance", "delete", VM, "Delete an instance (lowers the capacity)", None, &[202], "Instances"),
    op!("instanceView", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/instanceView", "An instance's instance view", None, &[200], "Instances"),
    op!("instanceLogs", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/virtualMachines/{instanceId}/shoal/logs", "An instance's output (Shoal extension; follow=true streams)", None, &[200], "Instances"),
    op!("operation", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/operations/{operationId}", "A long-running operation's status (Azure-AsyncOperation)", None, &[200], "Operations"),
    op!("operation", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/operationResults/{operationId}", "A long-running operation's status (Location)", None, &[200], "Operations"),
    op!("loadBalancers", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Network/loadBalancers", "List all load balancers", None, &[200], "Network"),
    op!("loadBalancers", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers", "List the load balancers of a group", None, &[200], "Network"),
    op!("loadBalancer", "get", LB, "Get a load balancer", None, &[200], "Network"),
    op!("loadBalancer", "put", LB, "Create or replace a load balancer", Some("Resource"), &[200, 201], "Network"),
    op!("loadBalancer", "delete", LB, "Delete a load balancer", None, &[200, 202, 204], "Network"),
    op!("loadBalancerChild", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}/{childKind}", "List a load balancer's children of one kind", None, &[200], "Network"),
    op!("loadBalancerChild", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}/{childKind}/{childName}", "Get one child of a load balancer", None, &[200], "Network"),
    op!("loadBalancerChild", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}/inboundNatRules/{childName}", "Create or replace an inbound NAT rule (stored and shown)", Some("Object"), &[200, 201], "Network"),
    op!("loadBalancerChild", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}/inboundNatRules/{childName}", "Delete an inbound NAT rule", None, &[200, 204], "Network"),
    op!("deployments", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments", "List a group's template deployments", None, &[200], "Deployments"),
    op!("deployment", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}", "Deploy an ARM template (Incremental mode)", Some("Deployment"), &[200, 201], "Deployments"),
    op!("deployment", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}", "Get a template deployment", None, &[200], "Deployments"),
    op!("deployment", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}", "Delete a deployment's record (its resources stay)", None, &[200, 204], "Deployments"),
    op!("deploymentValidate", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}/validate", "Check a template without deploying it", Some("Deployment"), &[200], "Deployments"),
    op!("deploymentOperations", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}/operations", "A deployment's per-resource operations", None, &[200], "Deployments"),
    op!("deploymentOperations", "get", "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}/deployments/{deploymentName}/operations", "A deployment's per-resource operations (ARM's path without the provider)", None, &[200], "Deployments"),
    op!("deploymentStatus", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{deploymentName}/operationStatuses/{operationId}", "A deployment's status (Azure-AsyncOperation)", None, &[200], "Deployments"),
    op!("applicationGateways", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Network/applicationGateways", "List all application gateways", None, &[200], "Network"),
    op!("applicationGateways", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/applicationGateways", "List the application gateways of a group", None, &[200], "Network"),
    op!("applicationGateway", "get", AGW, "Get an application gateway", None, &[200], "Network"),
    op!("applicationGateway", "put", AGW, "Create or replace an application gateway", Some("Resource"), &[200, 201], "Network"),
    op!("applicationGateway", "delete", AGW, "Delete an application gateway", None, &[200, 202, 204], "Network"),
    op!("userAssignedIdentities", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.ManagedIdentity/userAssignedIdentities", "List all user-assigned identities", None, &[200], "Identity"),
    op!("userAssignedIdentities", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities", "List the user-assigned identities of a group", None, &[200], "Identity"),
    op!("userAssignedIdentity", "get", UAI, "Get a user-assigned identity", None, &[200], "Identity"),
    op!("userAssignedIdentity", "put", UAI, "Create or replace a user-assigned identity", Some("Resource"), &[200, 201], "Identity"),
    op!("userAssignedIdentity", "patch", UAI, "Update a user-assigned identity (tags)", Some("Object"), &[200], "Identity"),
    op!("userAssignedIdentity", "delete", UAI, "Delete a user-assigned identity", None, &[200, 204], "Identity"),
    op!("virtualNetworks", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Network/virtualNetworks", "List every virtual network of a subscription", None, &[200], "Network"),
    op!("virtualNetworks", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks", "List the virtual networks of a group", None, &[200], "Network"),
    op!("virtualNetwork", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", "Get a virtual network", None, &[200], "Network"),
    op!("virtualNetwork", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", "Create or replace a virtual network", Some("Resource"), &[200, 201], "Network"),
    op!("virtualNetwork", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", "Delete a virtual network", None, &[200, 204], "Network"),
    op!("networkSecurityGroups", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Network/networkSecurityGroups", "List every network security group of a subscription", None, &[200], "Network"),
    op!("networkSecurityGroups", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups", "List the network security groups of a group", None, &[200], "Network"),
    op!("networkSecurityGroup", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", "Get a network security group", None, &[200], "Network"),
    op!("networkSecurityGroup", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", "Create or replace a network security group", Some("Resource"), &[200, 201], "Network"),
    op!("networkSecurityGroup", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", "Delete a network security group", None, &[200, 204], "Network"),
    op!("publicIPAddresses", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Network/publicIPAddresses", "List every public IP address of a subscription", None, &[200], "Network"),
    op!("publicIPAddresses", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses", "List the public IP addresss of a group", None, &[200], "Network"),
    op!("publicIPAddress", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", "Get a public IP address", None, &[200], "Network"),
    op!("publicIPAddress", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", "Create or replace a public IP address", Some("Resource"), &[200, 201], "Network"),
    op!("publicIPAddress", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", "Delete a public IP address", None, &[200, 204], "Network"),
    op!("proximityPlacementGroups", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/proximityPlacementGroups", "List every proximity placement group of a subscription", None, &[200], "Placement"),
    op!("proximityPlacementGroups", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/proximityPlacementGroups", "List the proximity placement groups of a group", None, &[200], "Placement"),
    op!("proximityPlacementGroup", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/proximityPlacementGroups/{proximityPlacementGroupName}", "Get a proximity placement group", None, &[200], "Placement"),
    op!("proximityPlacementGroup", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/proximityPlacementGroups/{proximityPlacementGroupName}", "Create or replace a proximity placement group", Some("Resource"), &[200, 201], "Placement"),
    op!("proximityPlacementGroup", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/proximityPlacementGroups/{proximityPlacementGroupName}", "Delete a proximity placement group", None, &[200, 204], "Placement"),
    op!("proximityPlacementGroup", "patch", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/proximityPlacementGroups/{proximityPlacementGroupName}", "Update a proximity placement group (tags)", Some("Object"), &[200], "Placement"),
    op!("hostGroups", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/hostGroups", "List every dedicated host group (stored only) of a subscription", None, &[200], "Placement"),
    op!("hostGroups", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/hostGroups", "List the dedicated host group (stored only)s of a group", None, &[200], "Placement"),
    op!("hostGroup", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/hostGroups/{hostGroupName}", "Get a dedicated host group (stored only)", None, &[200], "Placement"),
    op!("hostGroup", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/hostGroups/{hostGroupName}", "Create or replace a dedicated host group (stored only)", Some("Resource"), &[200, 201], "Placement"),
    op!("hostGroup", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/hostGroups/{hostGroupName}", "Delete a dedicated host group (stored only)", None, &[200, 204], "Placement"),
    op!("hostGroup", "patch", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/hostGroups/{hostGroupName}", "Update a dedicated host group (stored only) (tags)", Some("Object"), &[200], "Placement"),
    op!("subnets", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets", "List the subnets of a virtual network", None, &[200], "Network"),
    op!("subnet", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", "Get a subnet", None, &[200], "Network"),
    op!("subnet", "put", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", "Create or replace a subnet (checked with its network)", Some("Object"), &[200, 201], "Network"),
    op!("subnet", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", "Delete a subnet no scale set is in", None, &[200, 204], "Network"),
    op!("virtualMachines", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/virtualMachines", "List the virtual machines of a subscription (the instances of its Flexible scale sets)", None, &[200], "Compute"),
    op!("virtualMachines", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines", "List the virtual machines of a group (the instances of its Flexible scale sets)", None, &[200], "Compute"),
    op!("virtualMachine", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{vmName}", "Get a virtual machine of a Flexible scale set", None, &[200], "Compute"),
    op!("virtualMachine", "delete", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{vmName}", "Delete a virtual machine of a Flexible scale set (its capacity goes down by one)", None, &[200, 202, 204], "Compute"),
    op!("virtualMachineAction", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{vmName}/{action}", "start, powerOff, restart, deallocate, reimage, redeploy, performMaintenance a virtual machine", None, &[202], "Compute"),
    op!("platformImages", "get", "/providers/Shoal.Infrastructure/platformImages", "List the images published under a marketplace URN", None, &[200], "Images"),
    op!("platformImage", "get", "/providers/Shoal.Infrastructure/platformImages/{urn}", "A published URN", None, &[200], "Images"),
    op!("platformImage", "put", "/providers/Shoal.Infrastructure/platformImages/{urn}", "Publish a gallery image version under a URN publisher:offer:sku:version", Some("Object"), &[200, 201], "Images"),
    op!("platformImage", "delete", "/providers/Shoal.Infrastructure/platformImages/{urn}", "Withdraw a published URN", None, &[200, 204], "Images"),
    op!("vmImages", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/publishers", "VM image publishers (of what is published)", None, &[200], "Images"),
    op!("vmImages", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/publishers/{publisherName}/artifacttypes/vmimage/offers/{offer}/skus/{skus}/versions", "VM image versions of a published sku", None, &[200], "Images"),
    op!("vmImages", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/{location}/publishers/{publisherName}/artifacttypes/vmimage/offers/{offer}/skus/{skus}/versions/{version}", "One published VM image version", None, &[200], "Images"),
    op!("networkInterfaces", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkInterfaces", "The network interfaces of a group's Flexible VMs", None, &[200], "Network"),
    op!("networkInterface", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkInterfaces/{networkInterfaceName}", "A Flexible VM's network interface", None, &[200], "Network"),
    op!("healthz", "get", "/healthz", "Liveness", None, &[200], "Shoal"),
    op!("openapi", "get", "/openapi.json", "This document", None, &[200], "Shoal"),
    op!("identityToken", "get", "/msi/token", "Managed-identity token (App Service shape: IDENTITY_ENDPOINT, X-IDENTITY-HEADER)", None, &[200], "Identity"),
    op!("blobUpload", "post", "/shoal/v1/blobs", "Upload an image bundle (tar)", Some("Binary"), &[201], "Agent protocol"),
    op!("blob", "get", "/shoal/v1/blobs/{blobId}", "Download an image bundle", None, &[200], "Agent protocol"),
    op!("blobReplica", "put", "/shoal/v1/blobs/{blobId}/replica", "Another server's copy of a bundle just uploaded there (servers of one install)", Some("Binary"), &[200, 201], "Agent protocol"),
    op!("host", "get", "/shoal/v1/hosts/{hostName}", "Get a host", None, &[200], "Agent protocol"),
    op!("host", "put", "/shoal/v1/hosts/{hostName}", "Register a host", Some("Object"), &[200, 201], "Agent protocol"),
    op!("hostHeartbeat", "post", "/shoal/v1/hosts/{hostName}/heartbeat", "A host's agent is alive", None, &[200], "Agent protocol"),
    op!("hosts", "get", "/providers/Shoal.Infrastructure/hosts", "List hosts", None, &[200], "Hosts"),
    op!("hostResource", "get", "/providers/Shoal.Infrastructure/hosts/{hostName}", "Get a host", None, &[200], "Hosts"),
    op!("hostResource", "delete", "/providers/Shoal.Infrastructure/hosts/{hostName}", "Delete a host", None, &[200, 204], "Hosts"),
    op!("hostAction", "post", "/providers/Shoal.Infrastructure/hosts/{hostName}/{action}", "Cordon, uncordon or drain a host", None, &[200], "Hosts"),
    op!("joinTokens", "get", "/providers/Shoal.Infrastructure/joinTokens", "List the join tokens that have not expired (no secrets)", None, &[200], "Hosts"),
    op!("joinTokens", "post", "/providers/Shoal.Infrastructure/joinTokens", "Make a join token for an agent or balancer (answered once)", Some("Object"), &[201], "Hosts"),
    op!("joinToken", "get", "/providers/Shoal.Infrastructure/joinTokens/{tokenName}", "Get a join token (no secret)", None, &[200], "Hosts"),
    op!("joinToken", "delete", "/providers/Shoal.Infrastructure/joinTokens/{tokenName}", "Revoke a join token", None, &[200, 204], "Hosts"),
    op!("join", "post", "/shoal/v1/join", "Trade a join token for a host or balancer credential", Some("Object"), &[200], "Agent protocol"),
    op!("hostInstances", "get", "/shoal/v1/hosts/{hostName}/instances", "Instances assigned to a host (watch=true streams)", None, &[200], "Agent protocol"),
    op!("status", "put", "/shoal/v1/status/{subscriptionId}/{resourceGroupName}/{vmScaleSetName}/{instanceId}", "Report an instance's observed status", Some("Object"), &[200], "Agent protocol"),
    op!("statuses", "put", "/shoal/v1/statuses", "Report many instances' observed statuses at once", Some("Object"), &[200], "Agent protocol"),
    op!("storeList", "get", "/shoal/v1/list", "List store keys under a prefix", None, &[200], "Agent protocol"),
    op!("storeWatch", "get", "/shoal/v1/watch", "Watch store keys under a prefix (streams)", None, &[200], "Agent protocol"),
    op!("instanceHealth", "put", "/shoal/v1/health/{subscriptionId}/{resourceGroupName}/{vmScaleSetName}/{instanceId}", "Report an instance's health", Some("Object"), &[200], "Agent protocol"),
    op!("drain", "get", "/shoal/v1/drain/{subscriptionId}/{resourceGroupName}/{vmScaleSetName}/{instanceId}", "Has every balancer stopped sending to the instance", None, &[200], "Agent protocol"),
    op!("drain", "put", "/shoal/v1/drain/{subscriptionId}/{resourceGroupName}/{vmScaleSetName}/{instanceId}/{balancerName}", "A balancer acknowledges a drain", Some("Object"), &[200], "Agent protocol"),
    op!("balancer", "put", "/shoal/v1/balancers/{balancerName}", "Register a balancer", Some("Object"), &[200, 201], "Agent protocol"),
    op!("autoscaleSettings", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Insights/autoscalesettings", "List all autoscale settings", None, &[200], "Autoscale"),
    op!("autoscaleSettings", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Insights/autoscalesettings", "List the autoscale settings of a group", None, &[200], "Autoscale"),
    op!("autoscaleSetting", "get", AUTOSCALE, "Get an autoscale setting", None, &[200], "Autoscale"),
    op!("autoscaleSetting", "put", AUTOSCALE, "Create or replace an autoscale setting", Some("Resource"), &[200, 201], "Autoscale"),
    op!("autoscaleSetting", "patch", AUTOSCALE, "Update an autoscale setting (merge)", Some("Resource"), &[200], "Autoscale"),
    op!("autoscaleSetting", "delete", AUTOSCALE, "Delete an autoscale setting", None, &[200, 204], "Autoscale"),
    op!("autoscaleHistory", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Insights/autoscalesettings/{autoscaleSettingName}/history", "What autoscale changed or wanted to, and why (Shoal extension)", None, &[200], "Autoscale"),
    op!("metricsQuery", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/providers/Microsoft.Insights/metrics", "Query a scale set's metrics (metricnames, timespan, interval, aggregation, metricnamespace)", None, &[200], "Metrics"),
    op!("metricDefinitions", "get", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/providers/Microsoft.Insights/metricDefinitions", "A scale set's platform metrics", None, &[200], "Metrics"),
    op!("customMetrics", "post", "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}/metrics", "Push a custom metric (Azure Monitor's custom-metrics shape)", Some("Object"), &[200], "Metrics"),
    op!("metricsIngest", "post", "/shoal/v1/metrics", "Agents report instance metrics", Some("Object"), &[200], "Agent protocol"),
    op!("prometheus", "get", "/metrics", "Metrics in Prometheus text", None, &[200], "Metrics"),
    op!("activityLog", "get", "/subscriptions/{subscriptionId}/providers/Microsoft.Insights/eventtypes/management/values", "The activity log: autoscale's actions ($filter on eventTimestamp, resourceUri, resourceGroupName)", None, &[200], "Autoscale"),
];

/// Set-wide actions, in ARM's spelling (paths match case-insensitively).
const SET_ACTIONS: &[(Action, &str)] = &[
    (Action::Start, "Start instances"),
    (
        Action::PowerOff,
        "Power off instances (address and disk kept)",
    ),
    (Action::Restart, "Restart instances"),
    (
        Action::Deallocate,
        "Deallocate instances (address released)",
    ),
    (Action::Reimage, "Reimage instances"),
    (Action::ReimageAll, "Reimage instances (all disks)"),
    (Action::ManualUpgrade, "Move instances to the latest model"),
    (
        Action::DeleteInstances,
        "Delete instances (lowers the capacity)",
    ),
    (Action::Redeploy, "Redeploy instances"),
    (
        Action::PerformMaintenance,
        "Perform maintenance on instances",
    ),
];

/// Which documented operation a route is; no wildcard arm, so a new route does not compile
/// until it is documented here and in [`OPERATIONS`].
pub fn doc_key(route: &Route) -> &'static str {
    match route {
        Route::Subscription { .. } => "subscription",
        Route::Deployments { name: None, .. } => "deployments",
        Route::Deployments {
            action: Some(a), ..
        } => match a.to_ascii_lowercase().as_str() {
            "validate" => "deploymentValidate",
            "operations" => "deploymentOperations",
            _ => "deploymentStatus",
        },
        Route::Deployments { .. } => "deployment",
        Route::Locations { .. } => "locations",
        Route::Groups { .. } => "groups",
        Route::Group { .. } => "group",
        Route::Galleries { .. } => "galleries",
        Route::Gallery { .. } => "gallery",
        Route::Images { .. } => "images",
        Route::Image { .. } => "image",
        Route::Versions { .. } => "versions",
        Route::Version { .. } => "version",
        Route::ResourceSkus { .. } => "resourceSkus",
        Route::ScaleSets { .. } | Route::ScaleSetsByLocation { .. } => "scaleSets",
        Route::VmSizes { .. } => "vmSizes",
        Route::ScaleSet(_) => "scaleSet",
        Route::ScaleSetAction(..) => "scaleSetAction",
        Route::ScaleSetInstanceView(_) => "scaleSetInstanceView",
        Route::ScaleSetSkus(_) => "scaleSetSkus",
        Route::OsRollingUpgrade(_) => "osRollingUpgrade",
        Route::RollingUpgradeLatest(_) => "rollingUpgradeLatest",
        Route::RollingUpgradeCancel(_) => "rollingUpgradeCancel",
        Route::OsUpgradeHistory(_) => "osUpgradeHistory",
        Route::ExtensionRollingUpgrade(_) => "extensionRollingUpgrade",
        Route::SetExtensions(..) => "setExtensions",
        Route::SetOperation(..) => "setOperation",
        Route::InstanceOperation(..) => "instanceOperation",
        Route::InstanceExtensions(..) => "instanceExtensions",
        Route::Instances(_) => "instances",
        Route::Instance(..) => "instance",
        Route::InstanceAction(..) => "instanceAction",
        Route::InstanceView(..) => "instanceView",
        Route::InstanceLogs(..) => "instanceLogs",
        Route::Operation { .. } => "operation",
        Route::LoadBalancers { .. } => "loadBalancers",
        Route::LoadBalancer { .. } => "loadBalancer",
        Route::LoadBalancerChild { .. } => "loadBalancerChild",
        Route::ApplicationGateways { .. } => "applicationGateways",
        Route::ApplicationGateway { .. } => "applicationGateway",
        Route::UserAssignedIdentities { .. } => "userAssignedIdentities",
        Route::UserAssignedIdentity { .. } => "userAssignedIdentity",
        Route::Stored {
            kind, name: None, ..
        } => kind.path().1,
        Route::Stored { kind, .. } => kind.doc_key(),
        Route::NetworkInterfaces { name: None, .. } => "networkInterfaces",
        Route::NetworkInterfaces { .. } => "networkInterface",
        Route::VirtualMachines { .. } => "virtualMachines",
        Route::VirtualMachine { action: None, .. } => "virtualMachine",
        Route::VirtualMachine { .. } => "virtualMachineAction",
        Route::PlatformImages { urn: None } => "platformImages",
        Route::PlatformImages { .. } => "platformImage",
        Route::VmImages { .. } => "vmImages",
        Route::Subnets { child: None, .. } => "subnets",
        Route::Subnets { .. } => "subnet",
        Route::Healthz => "healthz",
        Route::OpenApi => "openapi",
        Route::IdentityToken => "identityToken",
        Route::BlobUpload => "blobUpload",
        Route::BlobReplica { .. } => "blobReplica",
        Route::Blob { .. } => "blob",
        Route::Host { .. } => "host",
        Route::HostInstances { .. } => "hostInstances",
        Route::Join => "join",
        Route::JoinTokens => "joinTokens",
        Route::JoinToken { .. } => "joinToken",
        Route::HostHeartbeat { .. } => "hostHeartbeat",
        Route::InstanceIdentity { .. } => "instanceIdentity",
        Route::Hosts => "hosts",
        Route::HostResource { .. } => "hostResource",
        Route::HostAction { .. } => "hostAction",
        Route::Status { .. } => "status",
        Route::Statuses => "statuses",
        Route::StoreList => "storeList",
        Route::StoreWatch => "storeWatch",
        Route::InstanceHealth { .. } => "instanceHealth",
        Route::Drain { .. } => "drain",
        Route::Balancer { .. } => "balancer",
        Route::AutoscaleSettings { .. } => "autoscaleSettings",
        Route::AutoscaleSetting { .. } => "autoscaleSetting",
        Route::AutoscaleHistory { .. } => "autoscaleHistory",
        Route::MetricsQuery(_) => "metricsQuery",
        Route::MetricDefinitions(_) => "metricDefinitions",
        Route::CustomMetrics(_) => "customMetrics",
        Route::MetricsIngest => "metricsIngest",
        Route::Prometheus => "prometheus",
        Route::ActivityLog { .. } => "activityLog",
        Route::MetadataEndpoints => "metadataEndpoints",
        Route::ImageAliases => "imageAliases",
        Route::Subscriptions => "subscriptions",
        Route::Tenants => "tenants",
        Route::OidcConfig { .. } => "oidcConfig",
        Route::Jwks { .. } => "jwks",
        Route::Token { .. } => "token",
        Route::RoleAssignments { .. } => "roleAssignments",
        Route::RoleDefinitions { .. } => "roleDefinitions",
        Route::Permissions { .. } => "permissions",
        Route::ServicePrincipals { .. } => "servicePrincipals",
    }
}

/// [`OPERATIONS`] plus one operation per set and instance action.
pub fn operations() -> Vec<Op> {
    let mut ops = OPERATIONS.to_vec();
    for (action, summary) in SET_ACTIONS {
        let body = match action {
            Action::DeleteInstances => "VirtualMachineScaleSetVMInstanceRequiredIDs",
            _ => "VirtualMachineScaleSetVMInstanceIDs",
        };
        ops.push(Op {
            path: Cow::Owned(format!("{VMSS}/{}", action.name())),
            ..op!(
                "scaleSetAction",
                "post",
                "",
                summary,
                Some(body),
                &[202],
                "Scale sets"
            )
        });
        if *action != Action::DeleteInstances {
            ops.push(Op {
                path: Cow::Owned(format!("{VM}/{}", action.name())),
                ..op!(
                    "instanceAction",
                    "post",
                    "",
                    summary,
                    None,
                    &[202],
                    "Instances"
                )
            });
        }
    }
    ops
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema = match name {
                "childKind" => json!({"type": "string", "enum": ["backendAddressPools", "probes", "loadBalancingRules", "frontendIPConfigurations"]}),
                "instanceId" => json!({"type": "string", "pattern": "^[0-9]{1,9}$"}),
                _ => json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

fn operation(op: &Op, id: &str) -> Value {
    let mut params = path_params(&op.path);
    if !op.path.starts_with("/shoal/") && op.path != "/healthz" && op.path != "/openapi.json" {
        params.push(json!({"name": "api-version", "in": "query", "required": false,
            "description": "Any version is accepted.", "schema": {"type": "string", "example": "2024-07-01"}}));
    }
    if op.key == "identityToken" {
        params.push(json!({"name": "resource", "in": "query", "required": true, "schema": {"type": "string", "example": "https://management.azure.com"}}));
        params.push(json!({"name": "X-IDENTITY-HEADER", "in": "header", "required": true, "schema": {"type": "string"}}));
    }
    if op.key == "scaleSet" && (op.method == "put" || op.method == "patch") {
        for h in ["If-Match", "If-None-Match"] {
            params.push(json!({"name": h, "in": "header", "required": false,
                "description": "An etag (or *); 412 PreconditionFailed when it does not hold.",
                "schema": {"type": "string"}}));
        }
    }
    if op.key == "instances" || op.key == "instance" {
        params.push(json!({"name": "$expand", "in": "query", "required": false, "schema": {"type": "string", "enum": ["instanceView"]}}));
    }
    let mut responses = Map::new();
    // Azure's VM image catalogue answers its lists as bare JSON arrays.
    let body_type = if op.key == "vmImages" && !op.path.ends_with("{version}") {
        "array"
    } else {
        "object"
    };
    for code in op.ok {
        let r = match code {
            202 => json!({"description": "Accepted; follow Azure-AsyncOperation"}),
            204 => json!({"description": "No content"}),
            _ if op.method == "delete" || op.method == "head" => json!({"description": "Done"}),
            _ => {
                json!({"description": "Success", "content": {"application/json": {"schema": {"type": body_type}}}})
            }
        };
        responses.insert(code.to_string(), r);
    }
    responses.insert(
        "default".into(),
        json!({"description": "An ARM error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}),
    );
    let mut v = json!({
        "operationId": id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = op.body {
        let content = if body == "Binary" {
            json!({"application/x-tar": {"schema": {"type": "string", "format": "binary"}}})
        } else {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}})
        };
        v["requestBody"] = json!({"required": op.method != "post", "content": content});
    }
    v
}

/// The whole document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for op in operations() {
        let n = seen.entry(format!("{}{}", op.key, op.method)).or_default();
        *n += 1;
        let id = if *n == 1 {
            format!("{}_{}", op.key, op.method)
        } else {
            format!("{}_{}{}", op.key, op.method, n)
        };
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation(&op, &id);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Shoal",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Virtual machine scale sets on your own machines, in Azure Resource Manager's wire format. Path segments other than names match case-insensitively; any api-version is accepted. Long-running operations answer Azure-AsyncOperation and Retry-After.",
        },
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}

fn schemas() -> Value {
    let name = json!({"type": "string", "minLength": 1});
    let tags = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let sku = json!({"type": "object", "properties": {
        "name": {"type": "string", "example": "Shoal_1vCPU_512MB"},
        "tier": {"type": "string"},
        "capacity": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 1000},
    }});
    let set_props = json!({"type": "object", "properties": {
        "upgradePolicy": {"type": "object", "properties": {"mode": {"type": "string", "enum": ["Automatic", "Manual", "Rolling"]}}},
        "orchestrationMode": {"type": "string", "enum": ["Uniform", "Flexible"]},
        "platformFaultDomainCount": {"type": "integer", "minimum": 1, "maximum": 5},
        "overprovision": {"type": "boolean"},
        "scaleInPolicy": {"type": "object", "properties": {"rules": {"type": "array", "items": {"type": "string", "enum": ["Default", "NewestVM", "OldestVM"]}}}},
        "virtualMachineProfile": {"type": "object", "properties": {
            "storageProfile": {"type": "object", "properties": {"imageReference": {"type": "object", "properties": {"id": {"type": "string"}}}}},
            "osProfile": {"type": "object", "properties": {
                "computerNamePrefix": {"type": "string"},
                "adminUsername": {"type": "string"},
                "customData": {"type": "string", "format": "byte"},
            }},
        }},
    }});
    json!({
        "ErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "minLength": 1},
                "message": {"type": "string", "minLength": 1},
                "target": {"type": "string"},
                "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
            },
        },
        "Object": {"type": "object"},
        "Resource": {"type": "object", "properties": {"location": name, "tags": tags, "properties": {"type": "object"}}},
        "ResourceGroup": {"type": "object", "required": ["location"], "properties": {"location": name, "tags": tags}},
        "ResourceGroupPatch": {"type": "object", "properties": {"tags": tags}},
        "VirtualMachineScaleSet": {
            "type": "object",
            "required": ["location", "sku", "properties"],
            "properties": {"location": name, "tags": tags, "sku": sku, "zones": {"type": "array", "items": {"type": "string"}}, "properties": set_props},
        },
        "VirtualMachineScaleSetUpdate": {
            "type": "object",
            "properties": {"tags": tags, "sku": sku, "properties": set_props},
        },
        "VirtualMachineScaleSetVMInstanceIDs": {
            "type": "object",
            "properties": {"instanceIds": {"type": "array", "items": {"type": "string"}}},
        },
        "VirtualMachineScaleSetVMInstanceRequiredIDs": {
            "type": "object",
            "required": ["instanceIds"],
            "properties": {"instanceIds": {"type": "array", "items": {"type": "string"}}},
        },
        "VirtualMachineScaleSetVM": {
            "type": "object",
            "properties": {"properties": {"type": "object", "properties": {"protectionPolicy": {"type": "object", "properties": {
                "protectFromScaleIn": {"type": "boolean"},
                "protectFromScaleSetActions": {"type": "boolean"},
            }}}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Method;
    use tower::ServiceExt;

    use super::*;
    use crate::server::{body_bytes, request};
    use crate::state::ApiState;

    fn sample(path: &str) -> String {
        path.split('/')
            .map(|s| match s {
                "{instanceId}" => "0",
                "{childKind}" => "probes",
                "{location}" => "local",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_documented_path_reaches_the_route_it_documents() {
        for op in operations() {
            let route = crate::routes::parse(&sample(&op.path))
                .unwrap_or_else(|e| panic!("{} {}: {}", op.method, op.path, e.message));
            assert_eq!(doc_key(&route), op.key, "{} {}", op.method, op.path);
        }
    }

    #[test]
    fn document_is_valid_json_with_unique_operation_ids() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        for (_, item) in doc["paths"].as_object().expect("paths") {
            for (_, op) in item.as_object().expect("path item") {
                assert!(ids.insert(op["operationId"].as_str().expect("id").to_string()));
            }
        }
        assert!(ids.len() >= OPERATIONS.len());
        assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    }

    #[tokio::test]
    async fn every_documented_method_is_served() {
        let st = ApiState {
            vm_views: Default::default(),
            clock: Arc::new(shoal_control::SystemClock),
            blob_dir: std::env::temp_dir().join("shoal-openapi-test-blobs"),
            ..crate::arm_crud::testing::empty_state(jiff::Timestamp::UNIX_EPOCH)
        };
        for op in operations() {
            if op.key == "storeWatch" || op.key == "hostInstances" {
                continue; // long-lived streams
            }
            let method: Method = op.method.to_ascii_uppercase().parse().expect("method");
            let req = request(method, &sample(&op.path), "{}");
            let resp = crate::router(st.clone())
                .oneshot(req)
                .await
                .expect("response");
            let status = resp.status().as_u16();
            let body = body_bytes(resp).await;
            assert_ne!(
                status, 405,
                "{} {} is documented but not served",
                op.method, op.path
            );
            if status == 404 {
                let text = String::from_utf8_lossy(&body);
                assert!(
                    !text.contains("No API at"),
                    "{} {}: {text}",
                    op.method,
                    op.path
                );
            }
        }
    }
}
