"""Azure's own API examples, replayed against Shoal as raw HTTP (issue 17).

The examples are copies of Azure/azure-rest-api-specs files (tests/azure-sdk/examples,
sources and commits in its README). Each is sent as it is, with only:

- the image reference swapped for a Shoal gallery image (`web_image`);
- placeholder names filled in (`{vmss-name}`, `{subscription-id}`, the example's own
  subscription id and resource group, `{your-username}`, …).

Each example must be accepted with a status the example lists, or refused with the ARM
error Azure gives for a reason in REFUSED (each one a row of the README's compatibility
table). Every key of the example's response, to depth 3, must be in Shoal's answer,
except the keys in MISSING_OK (each with its reason).

The module reports its counts at the end of the run (accepted / refused / keys missing).
"""

import base64
import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import conftest
from conftest import LOCATION, SUBSCRIPTION, env, wait_for, web_image

EXAMPLES = Path(__file__).parent / "examples"
COMPUTE = "Microsoft.Compute/virtualMachineScaleSets"

# Refusals Azure itself gives, for a reason the README's compatibility table states:
# example -> (status, ARM error code, what the error's target names, reason).
REFUSED = {
    "VirtualMachineScaleSet_Update_MaximumSet_Gen.json": (
        403, "LinkedAuthorizationFailed", "",
        "the generated example assigns the user-assigned identity 'key3951', which is not an "
        "identity's id; Azure refuses an identity the caller cannot assign with this error",
    ),
    **{
        f"VirtualMachineScaleSet_Create_With{n}.json": (
            400, "BadRequest", "properties.upgradePolicy.automaticOSUpgradePolicy",
            "the example turns on automatic OS upgrades without a health probe or the Application "
            "Health extension; Azure documents (and answers) this error for that",
        )
        for n in ("SecurityPostureReference", "ServiceArtifactReference")
    },
    "VirtualMachineScaleSet_Create_WithAzureApplicationGateway.json": (
        400, "InvalidResourceReference", "",
        "the example names an application gateway backend pool that does not exist in the "
        "fresh group; Azure refuses a reference to a missing resource with this error",
    ),
    "VirtualMachineScaleSet_ForceRecoveryServiceFabricPlatformUpdateDomainWalk_MaximumSet_Gen.json": (
        409, "OperationNotAllowed", "",
        "a platform update domain walk is for Service Fabric scale sets; Shoal runs no Service Fabric",
    ),
    "VirtualMachineScaleSet_ForceRecoveryServiceFabricPlatformUpdateDomainWalk_MinimumSet_Gen.json": (
        409, "OperationNotAllowed", "",
        "a platform update domain walk is for Service Fabric scale sets; Shoal runs no Service Fabric",
    ),
    "VirtualMachineScaleSet_ScaleOut.json": (
        400, "InvalidParameter", "properties.zone",
        "the example scales out into zone 1 of a set the replay makes without zones (the test "
        "server's host has no zone); Azure refuses a zone a set does not have",
    ),
    "VirtualMachineScaleSetVM_AttachDetachDataDisks_MaximumSet_Gen.json": (
        404, "NotFound", "diskId",
        "Shoal has no managed disks: the disks the example names do not exist, which Azure "
        "answers with a 404 for the disk",
    ),
    "VirtualMachineScaleSetVM_AttachDetachDataDisks_MinimumSet_Gen.json": (
        404, "NotFound", "diskId",
        "Shoal has no managed disks: the disks the example names do not exist, which Azure "
        "answers with a 404 for the disk",
    ),
    "VirtualMachineScaleSet_Create_WithAzureLoadBalancer.json": (
        400,
        "InvalidResourceReference",
        "",
        "the example names a load balancer, NAT pool and backend pool that do not exist in the "
        "fresh group; Azure refuses a reference to a missing resource with this error",
    ),
}

# Keys of Azure's answers that Shoal's cannot have: key path (and the keys under it) -> reason.
MISSING_OK = {
    "properties.virtualMachineProfile.osProfile.windowsConfiguration": "Windows only: Shoal's images are Linux-style bundles",
    "properties.osProfile.windowsConfiguration": "Windows only: Shoal's images are Linux-style bundles",
    "properties.virtualMachineProfile.diagnosticsProfile": (
        "Azure's WithUserData answer shows a boot-diagnostics account its request never sent; "
        "Shoal returns what was sent"
    ),
    "resources": "the set the example reads has no extensions (Azure, too, lists none then)",
    "tags.$type": "Azure's patch answer shows its storage's dictionary type as a tag; no client sets it",
    "nextLink": (
        "Azure's list example shows a page followed by more; the replayed group holds one "
        "setting, one page, and a last page has no nextLink (Azure's neither)"
    ),
    "properties.error": (
        "the rolling upgrade's error, which Azure (and Shoal) gives only for an upgrade that "
        "failed; the replayed upgrade succeeds"
    ),
    "rdpThumbPrint": "Windows only (Remote Desktop): Shoal's images are Linux-style bundles",
    "disks.encryptionSettings": "Azure Disk Encryption: an instance's disk is a copy of its bundle, not encrypted by Shoal",
    "statuses.message": "a status's message is optional: Shoal gives one only when there is something to say (a failure)",
    "disks.statuses.message": "a status's message is optional: Shoal gives one only when there is something to say (a failure)",
    "vmAgent.statuses.message": "a status's message is optional: Shoal gives one only when there is something to say (a failure)",
    "bootDiagnostics": (
        "the instance view's boot-diagnostics links are storage SAS URLs; Shoal answers where "
        "an instance's serial log is from retrieveBootDiagnosticsData"
    ),
    "value.identity.userAssignedIdentities": (
        "the generated example's set names the user-assigned identity 'key3951', not an "
        "identity's id; the replayed set has a system-assigned identity instead"
    ),
    "extendedLocation": "edge zones: Shoal has none, and the replay cannot name one",
    "properties.osProfile.customData": "custom data is write-only: Azure's service, like Shoal, never answers it",
    "properties.userData": "an instance's userData comes only with $expand=userData (as Azure's GET)",
    "sku.capacity": "an instance's sku has no capacity (a set's has); the generated example fills it",
    "properties.instanceView": (
        "an instance's PUT answers its model; the instance view comes with $expand=instanceView "
        "or from …/instanceView (Azure's generated example shows both)"
    ),
    "properties.availabilitySet": (
        "a scale set's instances are never in an availability set (Azure refuses the two "
        "together); the generated example fills every property"
    ),
    "zones": (
        "the replay's server has one host without a zone, so the replayed set has none; an "
        "instance of a zonal set shows its zone (tests/e2e/multihost.rs)"
    ),
    "value.sku.capacity": (
        "Azure's generated example fills a size's sku.capacity; a size's instance range is "
        "answered in capacity {minimum, maximum, defaultCapacity, scaleType}"
    ),
    "consoleScreenshotBlobUri": (
        "an instance is a process (or a VM without a display device): there is no screen to "
        "capture; the serial log's address is answered"
    ),
    "properties.protectedSettings": (
        "an extension's protected settings are secrets: Azure's service never answers them "
        "(its generated examples echo them), nor does Shoal"
    ),
    "properties.predictiveAutoscalePolicy.scaleLookAheadTime": (
        "null in Azure's answer; Shoal leaves an unset duration out"
    ),
}

# Per-instance actions (POST …/virtualMachines/{instanceId}/{action}) replayed alike.
VM_ACTIONS = ("Restart", "PowerOff", "Start", "Deallocate", "Reimage", "ReimageAll", "Redeploy", "PerformMaintenance")


def _load(name):
    return json.loads((EXAMPLES / name).read_text())


def _examples():
    return sorted(p.name for p in EXAMPLES.glob("*.json"))


@pytest.fixture
def group(resources):
    """A fresh resource group, deleted after the test without waiting: Azure's examples
    make sets whose instances keep a terminate notice (five minutes) before they stop."""
    name = conftest.unique("sdk")
    resources.resource_groups.create_or_update(name, {"location": LOCATION})
    yield name
    try:
        resources.resource_groups.begin_delete(name)
    except Exception as e:  # a failed cleanup must not hide the test's own outcome
        print(f"cleanup of {name} failed: {e}")


# --- counting ---------------------------------------------------------------------------

COUNTS = {"accepted": 0, "refused": 0, "failed": 0, "keys_missing": 0}
MISSING = {}


class _CountsReport:
    """Prints the counts in pytest's terminal summary (registered by `report_counts`)."""

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.section("Azure examples")
        terminalreporter.write_line(
            f"azure examples: {COUNTS['accepted']} accepted, {COUNTS['refused']} refused as Azure "
            f"would, {COUNTS['failed']} failed, {COUNTS['keys_missing']} response keys missing"
        )
        for name, keys in sorted(MISSING.items()):
            terminalreporter.write_line(f"  {name}: missing {keys}")


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("shoal-azure-examples"):
        plugins.register(_CountsReport(), "shoal-azure-examples")
    yield


# --- HTTP --------------------------------------------------------------------------------

_token = {}


def token():
    """The Owner's bearer token where the suite signs in (conftest.owner_token), else none."""
    if "t" not in _token:
        sign_in = getattr(conftest, "owner_token", None)
        try:
            _token["t"] = sign_in() if sign_in else None
        except Exception:  # a server without sign-in: no token needed
            _token["t"] = None
    return _token["t"]


def call(method, path, body=None, api_version="2025-04-01", query=""):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token():
        headers["Authorization"] = f"Bearer {token()}"
    url = f"{env('SHOAL_SDK_ENDPOINT')}{path}?api-version={api_version}{query}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip() else None)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text.strip() else None)


# --- substitution ------------------------------------------------------------------------


def fill(value, names):
    """Fills placeholders and the example's own names in every string of `value`."""
    if isinstance(value, dict):
        # Keys too: a user-assigned identity is named by its id, as a key.
        return {fill(k, names): fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
        return re.sub(r"\{[A-Za-z-]+\}", lambda m: names.get("*", "x"), value)
    return value


def names_for(example, group, vmss):
    p = example["parameters"]
    names = {
        "{subscription-id}": SUBSCRIPTION,
        "{subscriptionId}": SUBSCRIPTION,
        "{vmss-name}": vmss,
        "{virtualMachineScaleSetName}": vmss,
        "{resourceGroupName}": group,
        "{your-username}": "azureuser",
        "{your-password}": "Shoal-example-1!",
        "{vmss-vm-name}": f"{vmss}_0",
    }
    if p.get("subscriptionId", "{").startswith("{") is False:
        names[p["subscriptionId"]] = SUBSCRIPTION
    if "resourceGroupName" in p:
        names[f"/resourceGroups/{p['resourceGroupName']}/"] = f"/resourceGroups/{group}/"
    else:
        # A subscription-wide example's resources name Azure's usual group.
        names["/resourceGroups/myResourceGroup/"] = f"/resourceGroups/{group}/"
    return names


def with_image(body, image):
    """The one change to a scale-set body: its image is a Shoal gallery image."""
    profile = body.get("properties", {}).get("virtualMachineProfile", {})
    storage = profile.get("storageProfile")
    if storage is not None:
        storage["imageReference"] = {"id": image}
    return body


REFERENCES = ("loadBalancerBackendAddressPools", "loadBalancerInboundNatPools", "applicationGatewayBackendAddressPools", "applicationSecurityGroups", "publicIPPrefix", "diskEncryptionSet", "capacityReservationGroup")


def without_references(value):
    """A set an example assumes exists, without its references to resources Shoal has no
    kind for (Azure, like Shoal, refuses a set naming a missing resource); the subnets,
    security groups and placement groups it names are made by `make_referenced`."""
    if isinstance(value, dict):
        return {k: without_references(v) for k, v in value.items() if k not in REFERENCES}
    if isinstance(value, list):
        return [without_references(v) for v in value]
    return value


REFERENCED = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/"
    r"(Microsoft\.Network/virtualNetworks|Microsoft\.Network/networkSecurityGroups|Microsoft\.Network/loadBalancers|"
    r"Microsoft\.Compute/proximityPlacementGroups|Microsoft\.Compute/hostGroups)/([^/]+)(?:/(?:subnets|probes)/([^/]+))?$",
    re.IGNORECASE,
)


def referenced_ids(value):
    if isinstance(value, dict):
        out = [value["id"]] if isinstance(value.get("id"), str) else []
        return out + [i for v in value.values() for i in referenced_ids(v)]
    if isinstance(value, list):
        return [i for v in value for i in referenced_ids(v)]
    return []


def make_referenced(body, group):
    """Makes, in the replay's group, the resources an example's body names and assumes
    exist (its `{existing-…}` networks, subnets, security groups, placement and host
    groups), as a user of the example has them."""
    subnets = {}
    for rid in referenced_ids(body):
        m = REFERENCED.match(rid)
        if not m or m.group(1).lower() != group.lower():
            continue
        kind, name, child = m.group(2), m.group(3), m.group(4)
        path = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{kind}/{name}"
        if kind.endswith("virtualNetworks"):
            if child:
                subnets.setdefault(path, set()).add(child)
            continue
        if kind.endswith("loadBalancers"):
            if not child:
                continue  # only a probe's balancer is made (pools are left out)
            probe = {"name": child, "properties": {"protocol": "Tcp", "port": 8080}}
            status, answer = call("PUT", path, {"location": LOCATION, "properties": {"probes": [probe]}}, api_version="2024-05-01")
            assert status in (200, 201), (path, answer)
            continue
        resource = {"location": LOCATION}
        if kind.endswith("hostGroups"):
            resource["properties"] = {"platformFaultDomainCount": 1}
        status, answer = call("PUT", path, resource)
        assert status in (200, 201), (path, answer)
    for path, names in subnets.items():
        status, have = call("GET", path)
        known = {s["name"] for s in have["properties"]["subnets"]} if status == 200 else set()
        every = sorted(known | names)
        vnet = {
            "location": LOCATION,
            "properties": {
                "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                "subnets": [{"name": n, "properties": {"addressPrefix": f"10.0.{i}.0/24"}} for i, n in enumerate(every)],
            },
        }
        status, answer = call("PUT", path, vnet)
        assert status in (200, 201), (path, answer)


def kinds_made_right(value, group):
    """The generated examples' placeholder references (an availability set's id where a
    proximity placement group, host group or security group belongs) pointed at one of the
    right kind in `group`, which `make_referenced` then makes."""
    base = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers"
    right = {
        "proximityPlacementGroup": f"{base}/Microsoft.Compute/proximityPlacementGroups/near",
        "hostGroup": f"{base}/Microsoft.Compute/hostGroups/dedicated",
        "networkSecurityGroup": f"{base}/Microsoft.Network/networkSecurityGroups/guard",
    }
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "healthProbe" and "/probes/" not in str(v.get("id", "")):
                # A restore point's id where a load-balancer probe belongs.
                out[k] = {"id": f"{base}/Microsoft.Network/loadBalancers/guard-lb/probes/http"}
                continue
            wrong = isinstance(v, dict) and "/availabilitySets/" in str(v.get("id", ""))
            out[k] = {**v, "id": right[k]} if wrong and k in right else kinds_made_right(v, group)
        return out
    if isinstance(value, list):
        return [kinds_made_right(v, group) for v in value]
    return value


def placeholders_made_valid(body):
    """A generated example's set with its placeholder values ('aaaa…') where Shoal checks a
    value's form replaced by valid ones of the same meaning."""
    durations = {"gracePeriod": "PT30M", "notBeforeTimeout": "PT1S", "pauseTimeBetweenBatches": "PT0S", "timeBudget": "PT1H30M"}

    def valid(k, x):
        if k in durations and isinstance(x, str) and not x.startswith("P"):
            return durations[k]
        if k in ("customData", "userData") and isinstance(x, str) and len(x) % 4:
            return base64.b64encode(x.encode()).decode()
        return walk(x)

    def walk(v):
        if isinstance(v, dict):
            return {k: valid(k, x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(body)


def writable(response_body):
    """A PUT body made from an example's answer (a set the example assumes exists)."""
    body = {k: v for k, v in response_body.items() if k in ("location", "tags", "sku", "properties", "zones", "identity", "plan")}
    props = dict(body.get("properties", {}))
    for read_only in ("provisioningState", "uniqueId", "timeCreated"):
        props.pop(read_only, None)
    body["properties"] = props
    body["sku"] = {**body.get("sku", {}), "capacity": 1}
    # A terminate notice holds every deleted instance for its notBeforeTimeout (5 minutes
    # in Azure's examples): the replayed set gives one second, so the test's cleanup does
    # not wait. The key is kept, only its value is shorter.
    notice = props.get("virtualMachineProfile", {}).get("scheduledEventsProfile", {}).get("terminateNotificationProfile")
    if isinstance(notice, dict) and notice.get("enable"):
        notice["notBeforeTimeout"] = "PT1S"
    return body


# --- key comparison ----------------------------------------------------------------------


def key_paths(value, prefix="", depth=3):
    """Key paths of `value` to `depth` keys; a list is looked into through its first item."""
    if depth == 0:
        return set()
    if isinstance(value, list):
        return key_paths(value[0], prefix, depth) if value else set()
    if not isinstance(value, dict):
        return set()
    out = set()
    for k, v in value.items():
        path = f"{prefix}{k}"
        out.add(path)
        out |= key_paths(v, path + ".", depth - 1)
    return out


def lower_paths(paths):
    return {p.lower() for p in paths}


def missing_keys(expected, actual):
    have = lower_paths(key_paths(actual))
    # A list's items are checked under `value.`: the same reasons apply to them.
    allowed = lambda p: any(q == ok or q.startswith(ok + ".") for ok in MISSING_OK for q in (p, p.removeprefix("value.")))  # noqa: E731
    return sorted(p for p in key_paths(expected) if p.lower() not in have and not allowed(p))


# --- replay ------------------------------------------------------------------------------


def set_path(group, name):
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{COMPUTE}/{name}"


def put_set(group, name, body):
    return call("PUT", set_path(group, name), body)


def prerequisite_set(group, name, image, response_body=None):
    """A scale set an example assumes exists."""
    if response_body is None:
        body = prerequisite_body()
    else:
        body = writable(response_body)
    make_referenced(body, group)
    status, answer = put_set(group, name, with_image(body, image))
    assert status in (200, 201), answer

    def provisioned():
        status, got = call("GET", set_path(group, name))
        return status == 200 and got["properties"].get("provisioningState") == "Succeeded"

    # The examples read or change a set that exists: one whose creation has finished.
    wait_for(f"{name} to be provisioned", provisioned)
    return answer


def rolling_body():
    """A two-instance Rolling set (health from the Application Health extension) whose
    batches are one instance apart by a minute: an upgrade of it stays in flight."""
    return {
        "location": LOCATION,
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {"maxBatchInstancePercent": 50, "pauseTimeBetweenBatches": "PT60S"},
            },
            "virtualMachineProfile": {
                "storageProfile": {},
                "osProfile": {"computerNamePrefix": "ex"},
                "extensionProfile": {
                    "extensions": [
                        {
                            "name": "health",
                            "properties": {
                                "publisher": "Microsoft.ManagedServices",
                                "type": "ApplicationHealthLinux",
                                "typeHandlerVersion": "1.0",
                                "settings": {"protocol": "http", "port": 8080, "requestPath": "/health"},
                            },
                        }
                    ]
                },
            },
        },
    }


def first_instance(group, name):
    """The instance id of the set's first VM, once it exists (an example's `instanceId`)."""

    def listed():
        status, answer = call("GET", set_path(group, name) + "/virtualMachines")
        return status == 200 and answer["value"] and answer["value"][0]["instanceId"]

    return wait_for(f"an instance of {name}", listed)


def replay(name, group):
    """Sends the example; returns (listed statuses, status, answer, expected body)."""
    ex = _load(name)
    vmss = f"ex{uuid.uuid4().hex[:6]}"
    names = names_for(ex, group, vmss)
    image = web_image(group)
    params = fill(ex["parameters"], names)
    responses = ex["responses"]
    statuses = sorted(int(s) for s in responses)
    ok = [s for s in statuses if s < 300]
    expected = fill((responses.get(str(ok[0])) or {}).get("body"), names) if ok else None
    api = params.get("api-version", "2025-04-01")
    op = name.split(".")[0]

    if op.startswith("VirtualMachineScaleSet_Create"):
        make_referenced(params["parameters"], group)
        status, answer = put_set(group, vmss, with_image(params["parameters"], image))
        if status in (200, 201):
            # Compare with the status Shoal gave (Azure's 201 for a new set).
            expected = fill(responses[str(status)]["body"], names) if str(status) in responses else expected
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSet_Get_"):
        prerequisite_set(group, vmss, image, expected)
        expand = f"&$expand={params['$expand']}" if "$expand" in params else ""
        status, answer = call("GET", set_path(group, vmss), api_version=api, query=expand)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_GetOSUpgradeHistory_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        call("POST", set_path(group, vmss) + "/osRollingUpgrade", api_version=api)
        status, answer = call("GET", set_path(group, vmss) + "/osUpgradeHistory", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetRollingUpgrade_Cancel_"):
        # The example cancels an upgrade in flight (with none, Azure answers 409 too): a
        # Rolling set that follows its image definition, a newer version published, an
        # OS upgrade started whose second batch waits a minute.
        definition = image.rsplit("/versions/", 1)[0]
        prerequisite_set(group, vmss, definition, rolling_body())
        web_image(group, "1.0.1")
        call("POST", set_path(group, vmss) + "/osRollingUpgrade", api_version=api)

        def rolling_forward():
            status, got = call("GET", set_path(group, vmss) + "/rollingUpgrades/latest", api_version=api)
            return status == 200 and got["properties"]["runningStatus"]["code"] == "RollingForward"

        wait_for("the OS upgrade to roll forward", rolling_forward)
        status, answer = call("POST", set_path(group, vmss) + "/rollingUpgrades/cancel", api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_ListBySubscription_ByLocation":
        prerequisite_set(group, vmss, image, expected["value"][0])
        path = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/{params['location']}/virtualMachineScaleSets"
        status, answer = call("GET", path, api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_Update_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        status, answer = call("PATCH", set_path(group, vmss), params["parameters"], api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_GetInstanceView_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        status, answer = call("GET", set_path(group, vmss) + "/instanceView", api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_Delete_Force":
        prerequisite_set(group, vmss, image)
        query = f"&forceDeletion={params['forceDeletion']}"
        status, answer = call("DELETE", set_path(group, vmss), api_version=api, query=query)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_ListSkus_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        status, answer = call("GET", set_path(group, vmss) + "/skus", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetRollingUpgrade_GetLatest_"):
        # The upgrade's tags are its set's: a set with the example's tags.
        tagged = {"location": LOCATION, "tags": expected.get("tags", {}), "sku": {"name": "Shoal_1vCPU_512MB"}}
        tagged["properties"] = {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {"storageProfile": {}, "osProfile": {"computerNamePrefix": "ex"}},
        }
        prerequisite_set(group, vmss, image, tagged)
        call("POST", set_path(group, vmss) + "/osRollingUpgrade", api_version=api)
        status, answer = call("GET", set_path(group, vmss) + "/rollingUpgrades/latest", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetRollingUpgrade_StartOSUpgrade_"):
        prerequisite_set(group, vmss, image)
        status, answer = call("POST", set_path(group, vmss) + "/osRollingUpgrade", api_version=api)
        return statuses, status, answer, expected
    if op in ("VirtualMachineScaleSetVM_Get_WithUserData", "VirtualMachineScaleSetVM_Get_WithVMSizeProperties"):
        # The set the example's instance belongs to: its tags, userData and size properties.
        model = {
            "storageProfile": {},
            "osProfile": {"computerNamePrefix": "ex"},
            "userData": expected["properties"]["userData"],
        }
        if "hardwareProfile" in expected["properties"]:
            model["hardwareProfile"] = expected["properties"]["hardwareProfile"]
        prerequisite_set(
            group,
            vmss,
            image,
            {
                "location": LOCATION,
                "tags": expected["tags"],
                "sku": {"name": "Shoal_1vCPU_512MB"},
                "properties": {
                    "upgradePolicy": {"mode": "Manual"},
                    "virtualMachineProfile": model,
                },
            },
        )
        vm = first_instance(group, vmss)
        status, answer = call(
            "GET", set_path(group, vmss) + f"/virtualMachines/{vm}", api_version=api, query="&$expand=UserData"
        )
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_List_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        first_instance(group, vmss)
        status, answer = call("GET", set_path(group, vmss) + "/virtualMachines", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetVM_") and op.split("_")[1] in VM_ACTIONS:
        action = op.split("_")[1]
        action = action[0].lower() + action[1:]
        prerequisite_set(group, vmss, image)
        vm = first_instance(group, vmss)
        query = "&skipShutdown=true" if params.get("skipShutdown") else ""
        status, answer = call(
            "POST", set_path(group, vmss) + f"/virtualMachines/{vm}/{action}", api_version=api, query=query
        )
        return statuses, status, answer, expected
    if op in (
        "createOrUpdateAutoscaleSetting",
        "getAutoscaleSetting",
        "patchAutoscaleSetting",
        "deleteAutoscaleSetting",
        "listAutoscaleSetting",
    ):
        create = _load("createOrUpdateAutoscaleSetting.json")
        target = "testingsc"  # the scale set the examples scale, created first in the group
        prerequisite_set(group, target, image)
        body = fill(create["parameters"]["parameters"], names)
        path = (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/"
            f"Microsoft.Insights/autoscalesettings/{create['parameters']['autoscaleSettingName']}"
        )
        status, answer = call("PUT", path, body, api_version=api)
        if op == "getAutoscaleSetting":
            status, answer = call("GET", path, api_version=api)
        elif op == "patchAutoscaleSetting":
            status, answer = call("PATCH", path, params["autoscaleSettingResource"], api_version=api)
        elif op == "listAutoscaleSetting":
            status, answer = call("GET", path.rsplit("/", 1)[0], api_version=api)
        elif op == "deleteAutoscaleSetting":
            status, answer = call("DELETE", path, api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetExtension_") and op != "VirtualMachineScaleSetExtension_RollingUpgrade":
        # The set's model extensions as child resources; the examples that read, change
        # or delete one need a set that has it.
        verb = op.split("_")[1]
        ext = params.get("vmssExtensionName") or "ext"
        path = set_path(group, vmss) + f"/extensions/{ext}"
        body = prerequisite_body()
        if verb != "CreateOrUpdate":
            body["properties"]["virtualMachineProfile"]["extensionProfile"] = {"extensions": [{"name": ext, "properties": existing_extension(expected)}]}
        prerequisite_set(group, vmss, image, body)
        return (statuses, *extension_call(verb, path, params, api, expected, responses, names))
    if op == "VirtualMachineScaleSetExtension_RollingUpgrade":
        prerequisite_set(group, vmss, image)
        status, answer = call("POST", set_path(group, vmss) + "/extensionRollingUpgrade", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetVMExtension_"):
        ext = params.get("vmExtensionName") or "ext"
        prerequisite_set(group, vmss, image)
        vm = first_instance(group, vmss)
        path = set_path(group, vmss) + f"/virtualMachines/{vm}/extensions/{ext}"
        verb = op.split("_")[1]
        if verb != "Create":
            status, answer = call("PUT", path, {"properties": existing_extension(expected)}, api_version=api)
            assert status in (200, 201), answer
        return (statuses, *extension_call(verb, path, params, api, expected, responses, names))
    if op.startswith("VirtualMachineScaleSet_") and op.split("_")[1] in SET_OPERATIONS:
        verb = op.split("_")[1]
        body = prerequisite_body()
        if verb == "SetOrchestrationServiceState":
            # The service it suspends or resumes: automatic repairs, on health reports.
            body["properties"]["automaticRepairsPolicy"] = {"enabled": True, "gracePeriod": "PT30M"}
            body["properties"]["virtualMachineProfile"]["extensionProfile"] = rolling_body()["properties"]["virtualMachineProfile"]["extensionProfile"]
        prerequisite_set(group, vmss, image, body)
        vm = first_instance(group, vmss)
        request = params.get("vmInstanceIDs") or params.get("vmScaleSetReimageInput") or params.get("parameters")
        if isinstance(request, dict) and "instanceIds" in request:
            # The examples' instance ids are placeholders ('aaaa…'): the set's own.
            request = {**request, "instanceIds": [vm]}
        query = "".join(f"&{k}={str(params[k]).lower()}" for k in ("hibernate", "skipShutdown", "forceDeletion", "platformUpdateDomain") if k in params)
        status, answer = call("POST", set_path(group, vmss) + "/" + SET_OPERATIONS[verb], request, api_version=api, query=query)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetVM_") and op.split("_")[1] in VM_OPERATIONS:
        verb = op.split("_")[1]
        body = prerequisite_body()
        if verb == "SimulateEviction":
            # Only a Spot instance can be evicted.
            body["properties"]["virtualMachineProfile"]["priority"] = "Spot"
            body["properties"]["virtualMachineProfile"]["evictionPolicy"] = "Deallocate"
        prerequisite_set(group, vmss, image, body)
        vm = first_instance(group, vmss)
        query = f"&sasUriExpirationTimeInMinutes={params['sasUriExpirationTimeInMinutes']}" if "sasUriExpirationTimeInMinutes" in params else ""
        status, answer = call("POST", set_path(group, vmss) + f"/virtualMachines/{vm}/" + VM_OPERATIONS[verb],
                              params.get("parameters"), api_version=api, query=query)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_Delete_Force":
        prerequisite_set(group, vmss, image)
        vm = first_instance(group, vmss)
        status, answer = call("DELETE", set_path(group, vmss) + f"/virtualMachines/{vm}", api_version=api, query=f"&forceDeletion={params['forceDeletion']}")
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_Update_MaximumSet_Gen":
        # The set the example's instance comes from: its plan and model properties.
        shown = expected
        body = prerequisite_body()
        body["plan"] = shown["plan"]
        body["tags"] = shown.get("tags", {})
        body["properties"]["additionalCapabilities"] = shown["properties"]["additionalCapabilities"]
        vp = body["properties"]["virtualMachineProfile"]
        vp["hardwareProfile"] = shown["properties"]["hardwareProfile"]
        for key in ("securityProfile", "licenseType", "userData"):
            if key in shown["properties"]:
                vp[key] = shown["properties"][key]
        with_nic_configurations(vp)
        prerequisite_set(group, vmss, image, without_references(body))
        vm = first_instance(group, vmss)
        body = {**params["parameters"], "location": LOCATION}
        status, answer = call("PUT", set_path(group, vmss) + f"/virtualMachines/{vm}", body, api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_GetInstanceView_MaximumSet_Gen":
        # A set with an extension and automatic repairs: the instance view reports both.
        body = prerequisite_body()
        body["properties"]["automaticRepairsPolicy"] = {"enabled": True, "gracePeriod": "PT30M"}
        body["properties"]["virtualMachineProfile"]["extensionProfile"] = rolling_body()["properties"]["virtualMachineProfile"]["extensionProfile"]
        prerequisite_set(group, vmss, image, body)
        status, answer = call("GET", set_path(group, vmss) + "/instanceView", api_version=api)
        return statuses, status, answer, expected
    if op in ("VirtualMachineScaleSet_ListAll_MaximumSet_Gen", "VirtualMachineScaleSet_List_MaximumSet_Gen"):
        # The listed set, as the example shows it, with a system-assigned identity: the
        # user-assigned one it names ('key3951') is not an identity's id.
        shown = without_references({**expected["value"][0], "identity": {"type": "SystemAssigned"}})
        shown.pop("zones", None)  # placeholders ('aaaaaaa'); the replay's host has no zone
        shown = kinds_made_right(placeholders_made_valid(shown), group)
        prerequisite_set(group, vmss, image, shown)
        scope = f"/subscriptions/{SUBSCRIPTION}" + ("" if "ListAll" in op else f"/resourceGroups/{group}")
        status, answer = call("GET", f"{scope}/providers/{COMPUTE}", api_version=api)
        if status == 200:
            # Other tests' sets may be listed too: compare the one the replay made.
            answer = {**answer, "value": [s for s in answer["value"] if s["name"] == vmss]}
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_Update_MaximumSet_Gen":
        prerequisite_set(group, vmss, image)
        status, answer = call("PATCH", set_path(group, vmss), with_image(params["parameters"], image), api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_Update_MinimumSet_Gen":
        prerequisite_set(group, vmss, image)
        vm = first_instance(group, vmss)
        body = {**params["parameters"], "location": LOCATION}
        status, answer = call("PUT", set_path(group, vmss) + f"/virtualMachines/{vm}", body, api_version=api)
        return statuses, status, answer, expected
    if op in ("VirtualMachineScaleSetVM_Get_InstanceViewAutoPlacedOnDedicatedHostGroup",):
        # The set has the extensions the example's instance view reports.
        body = prerequisite_body()
        body["properties"]["virtualMachineProfile"]["extensionProfile"] = {"extensions": [
            {"name": e["name"], "properties": {**EXTENSION, "type": e.get("type", "extType")}} for e in expected.get("extensions") or []]}
        prerequisite_set(group, vmss, image, body)
        vm = first_instance(group, vmss)
        status, answer = call("GET", set_path(group, vmss) + f"/virtualMachines/{vm}/instanceView", api_version=api)
        return statuses, status, answer, expected
    if op in ("VirtualMachineScaleSetVM_Get_WithResilientVMDeletionStatus", "VirtualMachineScaleSetVM_List_WithResiliencyView"):
        # The set the example's instances belong to: its user-assigned identity (made here
        # under the example's names), security profile and resilient deletion policy.
        # The identity's group is the example's own: the replay's group stands for it.
        expected = json.loads(json.dumps(expected).replace("/resourceGroups/AzSecPackAutoConfigRG/", f"/resourceGroups/{group}/"))
        shown = expected["value"][0] if "value" in expected else expected
        body = prerequisite_body()
        body["tags"] = shown.get("tags", {})
        identities = (shown.get("identity") or {}).get("userAssignedIdentities") or {}
        for uai in identities:
            ensure_identity(group, uai.split("/")[-1])
        if identities:
            body["identity"] = {"type": shown["identity"]["type"], "userAssignedIdentities": {i: {} for i in identities}}
        if "securityProfile" in shown["properties"]:
            body["properties"]["virtualMachineProfile"]["securityProfile"] = shown["properties"]["securityProfile"]
        if "diskControllerType" in shown["properties"].get("storageProfile", {}):
            body["properties"]["virtualMachineProfile"]["storageProfile"]["diskControllerType"] = shown["properties"]["storageProfile"]["diskControllerType"]
        body["properties"]["resiliencyPolicy"] = {"resilientVMDeletionPolicy": {"enabled": True}}
        prerequisite_set(group, vmss, image, body)
        vm = first_instance(group, vmss)
        if "value" in expected:
            status, answer = call("GET", set_path(group, vmss) + "/virtualMachines", api_version=api, query="&$expand=resiliencyView")
            return statuses, status, answer, expected
        vm = first_instance(group, vmss)
        status, answer = call("GET", set_path(group, vmss) + f"/virtualMachines/{vm}", api_version=api, query=f"&$expand={params['expand']}")
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_List_MaximumSet_Gen":
        # The set the example's instances come from: its plan, tags and model properties
        # (the example's $filter, $select and $expand are placeholders: instanceView asked).
        shown = expected["value"][0]
        body = prerequisite_body()
        body["tags"] = shown.get("tags", {})
        body["plan"] = shown["plan"]
        vp = body["properties"]["virtualMachineProfile"]
        for key in ("securityProfile", "licenseType", "userData"):
            if key in shown["properties"]:
                vp[key] = shown["properties"][key]
        body["properties"]["additionalCapabilities"] = shown["properties"]["additionalCapabilities"]
        # Its VMs' NICs are made from configurations (networkApiVersion), as the answer shows.
        with_nic_configurations(vp)
        prerequisite_set(group, vmss, image, body)
        first_instance(group, vmss)
        status, answer = call("GET", set_path(group, vmss) + "/virtualMachines", api_version=api, query="&$expand=instanceView,userData")
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetVM_List_WithVirtualMachineResourceId":
        # The example lists a Flexible set's VMs: each is a virtual machine of its own.
        body = prerequisite_body()
        body["properties"]["orchestrationMode"] = "Flexible"
        prerequisite_set(group, vmss, image, body)
        first_instance(group, vmss)
        expand = f"&$expand={params['$expand']}" if "$expand" in params else ""
        status, answer = call("GET", set_path(group, vmss) + "/virtualMachines", api_version=api, query=expand)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_Get":
        prerequisite_set(group, vmss, image, expected)
        status, answer = call("GET", set_path(group, vmss), api_version=api)
        return statuses, status, answer, expected
    if op in ("VirtualMachineScaleSet_ListAll_MinimumSet_Gen", "VirtualMachineScaleSet_List_MinimumSet_Gen"):
        prerequisite_set(group, vmss, image)
        scope = f"/subscriptions/{SUBSCRIPTION}" + ("" if "ListAll" in op else f"/resourceGroups/{group}")
        status, answer = call("GET", f"{scope}/providers/{COMPUTE}", api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_ListSkus_MaximumSet_Gen":
        prerequisite_set(group, vmss, image)
        status, answer = call("GET", set_path(group, vmss) + "/skus", api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSet_GetOSUpgradeHistory_MaximumSet_Gen":
        prerequisite_set(group, vmss, image)
        call("POST", set_path(group, vmss) + "/osRollingUpgrade", api_version=api)

        def recorded():
            status, answer = call("GET", set_path(group, vmss) + "/osUpgradeHistory", api_version=api)
            return status == 200 and answer["value"] and (status, answer)

        status, answer = wait_for("the upgrade in the history", recorded)
        return statuses, status, answer, expected
    pytest.fail(f"no replay written for {name}")


# Set operations by the word in the example's name: the path segment they POST to.
SET_OPERATIONS = {
    "Deallocate": "deallocate", "PowerOff": "powerOff", "Restart": "restart", "Start": "start",
    "Reimage": "reimage", "ReimageAll": "reimageAll", "Redeploy": "redeploy",
    "PerformMaintenance": "performMaintenance", "UpdateInstances": "manualupgrade",
    "DeleteInstances": "delete", "Reapply": "reapply", "ApproveRollingUpgrade": "approveRollingUpgrade",
    "ConvertToSinglePlacementGroup": "convertToSinglePlacementGroup",
    "SetOrchestrationServiceState": "setOrchestrationServiceState",
    "ForceRecoveryServiceFabricPlatformUpdateDomainWalk": "forceRecoveryServiceFabricPlatformUpdateDomainWalk",
    "ScaleOut": "scaleOut",
}
# Instance operations beyond the power actions, likewise.
VM_OPERATIONS = {
    "ApproveRollingUpgrade": "approveRollingUpgrade", "RetrieveBootDiagnosticsData": "retrieveBootDiagnosticsData",
    "SimulateEviction": "simulateEviction", "AttachDetachDataDisks": "attachDetachDataDisks",
}


def extension_call(verb, path, params, api, expected, responses, names):
    """An extension example's request (set or VM extension): (status, answer, expected)."""
    if verb in ("CreateOrUpdate", "Create"):
        status, answer = call("PUT", path, params["extensionParameters"], api_version=api)
        if str(status) in responses:
            expected = fill(responses[str(status)].get("body"), names)
    elif verb == "Update":
        status, answer = call("PATCH", path, params["extensionParameters"], api_version=api)
    elif verb == "Get":
        status, answer = call("GET", path, api_version=api, query=f"&$expand={params['$expand']}" if "$expand" in params else "")
    elif verb == "List":
        status, answer = call("GET", path.rsplit("/", 1)[0], api_version=api)
    else:
        status, answer = call("DELETE", path, api_version=api)
    return status, answer, expected


# An extension Shoal records without running it (any publisher and type but the health one).
EXTENSION = {"publisher": "extPublisher", "type": "extType", "typeHandlerVersion": "1.2", "autoUpgradeMinorVersion": True, "settings": {"UserName": "xyz@microsoft.com"}}


def ensure_identity(group, name):
    """A user-assigned identity an example's set names, made under the example's names."""
    call("PUT", f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{group}", {"location": LOCATION}, api_version="2022-09-01")
    status, answer = call(
        "PUT",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        {"location": LOCATION},
        api_version="2023-01-31",
    )
    assert status in (200, 201), answer


def existing_extension(expected):
    """The properties of the extension an example reads: those its answer shows."""
    shown = expected or {}
    if "value" in shown:
        shown = (shown["value"] or [{}])[0]
    props = {k: v for k, v in (shown.get("properties") or {}).items() if k not in ("provisioningState", "instanceView")}
    return {**EXTENSION, **props}


def with_nic_configurations(vp):
    """A model whose VMs' NICs are made from configurations (networkApiVersion)."""
    vp["networkProfile"] = {
        "networkApiVersion": "2020-11-01",
        "networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": True, "ipConfigurations": [{"name": "ip", "properties": {}}]}}],
    }


def prerequisite_body():
    """The body `prerequisite_set` uses by default, to add to."""
    return {
        "location": LOCATION,
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 1},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {"storageProfile": {}, "osProfile": {"computerNamePrefix": "ex"}},
        },
    }


@pytest.mark.parametrize("name", _examples())
def test_azure_example(name, group):
    statuses, status, answer, expected = replay(name, group)
    if name in REFUSED:
        want_status, want_code, target, reason = REFUSED[name]
        error = (answer or {}).get("error", {})
        if status == want_status and error.get("code") == want_code and target in error.get("target", ""):
            COUNTS["refused"] += 1
            return
        COUNTS["failed"] += 1
        pytest.fail(f"expected Azure's {want_status} {want_code} ({reason}), got {status}: {answer}")
    if status not in statuses or status >= 300:
        COUNTS["failed"] += 1
        pytest.fail(f"{name}: status {status} not one the example lists {statuses}: {json.dumps(answer)[:600]}")
    COUNTS["accepted"] += 1
    if expected is not None:
        missing = missing_keys(expected, answer or {})
        if missing:
            COUNTS["keys_missing"] += len(missing)
            MISSING[name] = missing
        assert not missing, f"{name}: Azure's answer has keys Shoal's lacks: {missing}"
