"""Resource groups (azure-mgmt-resource 26) and gallery image versions (azure-mgmt-compute
39), including paging: the SDK follows `nextLink` exactly as given."""

import pytest
from azure.core.exceptions import ResourceNotFoundError

from conftest import DEADLINE, LOCATION, SUBSCRIPTION, env, unique, web_image


def test_resource_group_lifecycle(resources):
    name = unique("grp")
    created = resources.resource_groups.create_or_update(name, {"location": LOCATION, "tags": {"team": "sdk"}})
    assert created.name == name and created.location == LOCATION
    assert created.properties.provisioning_state == "Succeeded"
    assert created.id == f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}"

    got = resources.resource_groups.get(name)
    assert got.tags == {"team": "sdk"}
    assert resources.resource_groups.check_existence(name) is True
    assert name in [g.name for g in resources.resource_groups.list()]

    resources.resource_groups.begin_delete(name).result(timeout=DEADLINE)
    with pytest.raises(ResourceNotFoundError) as e:
        resources.resource_groups.get(name)
    assert e.value.error.code == "ResourceGroupNotFound"
    assert resources.resource_groups.check_existence(name) is False


def test_list_follows_next_link_across_pages(resources):
    # Shoal pages at 200 items: 205 groups take two pages, and the second page is only
    # reachable through the nextLink of the first (which must carry api-version).
    prefix = unique("page")
    names = {f"{prefix}-{i:03}" for i in range(205)}
    for n in names:
        resources.resource_groups.create_or_update(n, {"location": LOCATION})
    pages = []
    try:
        listed = {
            g.name
            for g in resources.resource_groups.list(
                raw_response_hook=lambda r: pages.append(r.http_request.url)
            )
        }
        assert names <= listed
        assert len(pages) >= 2
        assert "api-version=" in pages[1] and "skiptoken" in pages[1]
    finally:
        for n in names:
            resources.resource_groups.begin_delete(n, polling=False)


def test_gallery_image_versions(compute, group):
    image_id = web_image(group)
    version = compute.gallery_image_versions.get(group, "apps", "web", "1.0.0")
    assert version.id == image_id
    assert version.name == "1.0.0"
    assert version.properties.provisioning_state == "Succeeded"
    shoal = dict(version.properties["shoal"])
    assert shoal["command"] == "./shoal-web" and shoal["port"] == 8080

    web_image(group, "1.0.1")
    listed = [v.name for v in compute.gallery_image_versions.list_by_gallery_image(group, "apps", "web")]
    assert listed == ["1.0.0", "1.0.1"]
    with pytest.raises(ResourceNotFoundError):
        compute.gallery_image_versions.get(group, "apps", "web", "9.9.9")
    # PATCH updates what exists; it never creates (found by the schemathesis run).
    with pytest.raises(ResourceNotFoundError):
        compute.galleries.begin_update(group, "nope", {"tags": {"a": "b"}}).result(timeout=DEADLINE)


def test_readme_snippet_runs(resources, endpoint):
    """The README's "Use the Azure SDK" example, run as written (against this server)."""
    import re

    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use the Azure SDK", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "begin_create_or_update" in snippet
    # The quickstart's group and image, which the snippet builds on.
    resources.resource_groups.create_or_update("demo", {"location": LOCATION})
    try:
        web_image("demo")
        printed = []
        exec(  # noqa: S102 - the README's own code
            compile(
                snippet.replace("http://127.0.0.1:7070", endpoint)
                .replace(".shoal/credentials/owner.json", f"{env('SHOAL_SDK_DATA_DIR')}/credentials/owner.json")
                .replace("https://127.0.0.1:7443", env("SHOAL_SDK_TLS_ENDPOINT"))
                .replace(".shoal/tls/cert.pem", env("SHOAL_SDK_TLS_CERT")),
                "README.md",
                "exec",
            ),
            {"print": lambda *a: printed.append(" ".join(map(str, a)))},
        )
        assert printed[0] == "sdk Succeeded"
        assert sorted(printed[1:]) == ["0 instance 0", "1 instance 1", "2 instance 2"]
    finally:
        resources.resource_groups.begin_delete("demo").result(timeout=DEADLINE)
