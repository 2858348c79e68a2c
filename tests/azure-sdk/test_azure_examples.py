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
        return {k: fill(v, names) for k, v in value.items()}
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
    return names


def with_image(body, image):
    """The one change to a scale-set body: its image is a Shoal gallery image."""
    profile = body.get("properties", {}).get("virtualMachineProfile", {})
    storage = profile.get("storageProfile")
    if storage is not None:
        storage["imageReference"] = {"id": image}
    return body


def writable(response_body):
    """A PUT body made from an example's answer (a set the example assumes exists)."""
    body = {k: v for k, v in response_body.items() if k in ("location", "tags", "sku", "properties", "zones")}
    props = dict(body.get("properties", {}))
    for read_only in ("provisioningState", "uniqueId", "timeCreated"):
        props.pop(read_only, None)
    body["properties"] = props
    body["sku"] = {**body.get("sku", {}), "capacity": 1}
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
    allowed = lambda p: any(p == ok or p.startswith(ok + ".") for ok in MISSING_OK)  # noqa: E731
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
        ext = params["vmssExtensionName"]
        path = set_path(group, vmss) + f"/extensions/{ext}"
        verb = op.split("_")[1]
        body = prerequisite_body()
        if verb != "CreateOrUpdate":
            body["properties"]["virtualMachineProfile"]["extensionProfile"] = {"extensions": [{"name": ext, "properties": EXTENSION}]}
        prerequisite_set(group, vmss, image, body)
        if verb == "CreateOrUpdate":
            status, answer = call("PUT", path, params["extensionParameters"], api_version=api)
            if str(status) in responses:
                expected = fill(responses[str(status)].get("body"), names)
        elif verb == "Update":
            status, answer = call("PATCH", path, params["extensionParameters"], api_version=api)
        elif verb == "Get":
            status, answer = call("GET", path, api_version=api)
        elif verb == "List":
            status, answer = call("GET", path.rsplit("/", 1)[0], api_version=api)
        else:
            status, answer = call("DELETE", path, api_version=api)
        return statuses, status, answer, expected
    if op == "VirtualMachineScaleSetExtension_RollingUpgrade":
        prerequisite_set(group, vmss, image)
        status, answer = call("POST", set_path(group, vmss) + "/extensionRollingUpgrade", api_version=api)
        return statuses, status, answer, expected
    if op.startswith("VirtualMachineScaleSetVMExtension_"):
        ext = params["vmExtensionName"]
        prerequisite_set(group, vmss, image)
        vm = first_instance(group, vmss)
        path = set_path(group, vmss) + f"/virtualMachines/{vm}/extensions/{ext}"
        verb = op.split("_")[1]
        if verb != "Create":
            status, answer = call("PUT", path, {"properties": EXTENSION}, api_version=api)
            assert status in (200, 201), answer
        if verb == "Create":
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
        return statuses, status, answer, expected
    pytest.fail(f"no replay written for {name}")


# An extension Shoal records without running it (any publisher and type but the health one).
EXTENSION = {"publisher": "extPublisher", "type": "extType", "typeHandlerVersion": "1.2", "autoUpgradeMinorVersion": True, "settings": {"UserName": "xyz@microsoft.com"}}


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
