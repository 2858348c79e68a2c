//! The command line as a user types it: every command parses the flags `az` users expect,
//! has complete help, and turns into exactly the ARM request the server expects.
//! No server is involved: requests are built by pure functions.

// A failed unwrap is how these tests report a failure.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use clap::{CommandFactory, Parser};
use reqwest::Method;
use serde_json::{json, Value};
use shoal_cli::group::{self, GroupCommand};
use shoal_cli::image::{self, ImageCommand};
use shoal_cli::vmss::{self, VmssCommand};
use shoal_cli::{ApiRequest, Cli, ClientCommand, Kind, OutputFormat, Table};

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const VMSS: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
const GALLERY: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps";

fn parse(line: &str) -> Cli {
    let args = std::iter::once("shoal").chain(line.split_whitespace());
    match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => panic!("{line:?} did not parse:\n{err}"),
    }
}

fn parse_err(line: &str) -> String {
    let args = std::iter::once("shoal").chain(line.split_whitespace());
    match Cli::try_parse_from(args) {
        Ok(cli) => panic!("{line:?} parsed: {cli:?}"),
        Err(err) => err.to_string(),
    }
}

fn image_cmd(line: &str) -> ImageCommand {
    match parse(line).command {
        ClientCommand::Image(cmd) => *cmd,
        other => panic!("not an image command: {other:?}"),
    }
}

fn vmss_cmd(line: &str) -> VmssCommand {
    match parse(line).command {
        ClientCommand::Vmss(cmd) => *cmd,
        other => panic!("not a vmss command: {other:?}"),
    }
}

fn vmss_request(line: &str) -> ApiRequest {
    match parse(line).command {
        ClientCommand::Vmss(cmd) => vmss::request_for(SUB, &cmd).unwrap(),
        other => panic!("not a vmss command: {other:?}"),
    }
}

fn group_request(line: &str) -> ApiRequest {
    match parse(line).command {
        ClientCommand::Group(cmd) => group::request_for(SUB, &cmd),
        other => panic!("not a group command: {other:?}"),
    }
}

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

/// The `shoal` binary puts its server modes next to the client verbs, usually with
/// `--version`; nothing may clash with that.
#[test]
fn the_commands_fit_under_a_binary_with_server_modes() {
    #[derive(clap::Parser)]
    #[command(name = "shoal", version, propagate_version = true)]
    struct Shoal {
        #[command(flatten)]
        options: shoal_cli::ClientOptions,
        #[command(subcommand)]
        command: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        /// Run everything in one process.
        Serve,
        #[command(flatten)]
        Client(ClientCommand),
    }
    Shoal::command().debug_assert();
    let shoal =
        Shoal::try_parse_from(["shoal", "vmss", "list", "-g", "demo", "-o", "table"]).unwrap();
    assert!(matches!(shoal.command, Top::Client(ClientCommand::Vmss(_))));
    assert_eq!(shoal.options.output, OutputFormat::Table);
    assert!(matches!(
        Shoal::try_parse_from(["shoal", "serve"]).unwrap().command,
        Top::Serve
    ));
}

#[test]
fn every_command_and_flag_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() && path != " shoal" {
            missing.push(format!("{path}: command has no about"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{id}: no help"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&Cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn global_options_have_az_defaults_and_go_anywhere() {
    // Ensure the environment of whoever runs the tests does not leak in.
    let cli = Cli::try_parse_from(["shoal", "group", "list"]).unwrap();
    if std::env::var_os("SHOAL_ENDPOINT").is_none() {
        assert_eq!(cli.options.endpoint.as_str(), "http://127.0.0.1:7070/");
    }
    if std::env::var_os("SHOAL_SUBSCRIPTION").is_none() {
        assert_eq!(cli.options.subscription, SUB);
    }
    assert_eq!(cli.options.output, OutputFormat::Json);

    let cli =
        parse("--endpoint http://10.0.0.1:9000 vmss list -g demo -o table --subscription abc");
    assert_eq!(cli.options.endpoint.as_str(), "http://10.0.0.1:9000/");
    assert_eq!(cli.options.subscription, "abc");
    assert_eq!(cli.options.output, OutputFormat::Table);
    let cli = parse("vmss list-instances -g demo -n web --output json");
    assert_eq!(cli.options.output, OutputFormat::Json);
    assert!(parse_err("group list -o yaml").contains("invalid value 'yaml'"));
}

#[test]
fn group_commands() {
    let req = group_request("group create --name demo --location local");
    assert_eq!(req.method, Method::PUT);
    assert_eq!(
        req.path,
        format!("/subscriptions/{SUB}/resourcegroups/demo")
    );
    assert_eq!(req.body, Some(json!({"location": "local"})));
    assert!(matches!(req.kind, Kind::Write { no_wait: false, .. }));

    let req = group_request("group create -n demo -l local --tags env=dev team owner=a=b");
    assert_eq!(
        req.body,
        Some(json!({"location": "local", "tags": {"env": "dev", "team": "", "owner": "a=b"}}))
    );

    let req = group_request("group show --name demo");
    assert_eq!(
        (req.method, req.path.as_str()),
        (
            Method::GET,
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/demo"
        )
    );
    assert_eq!(
        group_request("group show -g demo").path,
        req.path,
        "az's -g alias"
    );

    let req = group_request("group list");
    assert_eq!(req.path, format!("/subscriptions/{SUB}/resourcegroups"));
    assert_eq!(req.kind, Kind::List(Table::Generic));

    let req = group_request("group delete -n demo --yes --no-wait");
    assert_eq!(req.method, Method::DELETE);
    assert_eq!(req.body, None);
    assert_eq!(req.kind, Kind::Action { no_wait: true });
    let ClientCommand::Group(GroupCommand::Delete(args)) = parse("group delete -n demo -y").command
    else {
        panic!()
    };
    assert!(args.yes && !args.no_wait);

    assert!(parse_err("group create --name demo").contains("--location"));
}

#[test]
fn image_create_sends_gallery_definition_and_version() {
    let ImageCommand::Create(args) = image_cmd(
        "image create -g demo --gallery apps --name web --version 1.0.0 --dir examples/web --command ./shoal-web",
    )
    else {
        panic!()
    };
    assert_eq!(args.port, 8080, "default port");
    let [gallery, definition, version] = image::create_requests(SUB, &args, "local", "blob-1");
    assert_eq!(gallery.method, Method::PUT);
    assert_eq!(gallery.path, GALLERY);
    assert_eq!(
        gallery.body,
        Some(json!({"location": "local", "properties": {}}))
    );
    assert_eq!(definition.path, format!("{GALLERY}/images/web"));
    assert_eq!(
        definition.body,
        Some(json!({"location": "local", "properties": {
            "osType": "Linux", "osState": "Generalized",
            "identifier": {"publisher": "shoal", "offer": "apps", "sku": "web"}
        }}))
    );
    assert_eq!(version.path, format!("{GALLERY}/images/web/versions/1.0.0"));
    assert_eq!(
        version.body,
        Some(json!({"location": "local", "properties": {"shoal": {
            "kind": "process", "command": "./shoal-web", "port": 8080, "blobId": "blob-1"
        }}}))
    );
    assert_eq!(
        version.kind,
        Kind::Write {
            no_wait: false,
            table: Table::ImageVersions
        }
    );

    let ImageCommand::Create(args) = image_cmd(
        "image create -g demo -r apps -n web -e 2.0.0 --dir d --command run --port 9000 --kind process -l west --no-wait",
    )
    else {
        panic!()
    };
    assert_eq!(
        (args.port, args.location.as_deref(), args.no_wait),
        (9000, Some("west"), true)
    );
    // A VM image takes files, not a directory and a command.
    let ImageCommand::Create(vm) = image_cmd(
        "image create -g demo -r vms -n tiny -e 1.0.0 --kind vm --kernel k --initrd i --cmdline quiet --port 8080",
    )
    else {
        panic!()
    };
    assert_eq!(vm.check(), Ok(()));
    let [_, _, version] = image::create_requests(SUB, &vm, "local", "blob-2");
    assert_eq!(
        version.body,
        Some(json!({"location": "local", "properties": {"shoal": {
            "kind": "vm", "port": 8080, "blobId": "blob-2",
            "kernel": "kernel", "initrd": "initrd", "cmdline": "quiet"
        }}}))
    );
    let ImageCommand::Create(mixed) = image_cmd(
        "image create -g demo --gallery apps --name web --version 1 --dir d --command c --kind vm",
    ) else {
        panic!()
    };
    assert!(mixed
        .check()
        .is_err_and(|e| e.contains("not --dir/--command")));
    assert!(
        parse_err("image create -g demo -r vms -n tiny -e 1 --kind vm --initrd i")
            .contains("--kernel")
    );
    assert!(
        parse_err("image create -g demo --gallery apps --name web --version 1 --dir d")
            .contains("--command")
    );
}

#[test]
fn image_show_list_delete() {
    let show = |line: &str| match parse(line).command {
        ClientCommand::Image(cmd) => image::request_for(SUB, &cmd),
        _ => panic!(),
    };
    let req = show("image show -g demo --gallery apps --name web --version 1.0.0").unwrap();
    assert_eq!(
        (req.method, req.path),
        (Method::GET, format!("{GALLERY}/images/web/versions/1.0.0"))
    );
    let req = show("image show -g demo --gallery apps --name web").unwrap();
    assert_eq!(req.path, format!("{GALLERY}/images/web"));
    let req = show("image delete -g demo --gallery apps --name web --version 1.0.0").unwrap();
    assert_eq!(req.method, Method::DELETE);
    assert_eq!(req.kind, Kind::Action { no_wait: false });
    assert!(
        show("image list -g demo --gallery apps").is_none(),
        "list walks several paths"
    );
    assert!(parse_err("image list -g demo --name web").contains("--gallery"));
}

#[test]
fn vmss_create_body() {
    let VmssCommand::Create(mut args) = vmss_cmd(
        "vmss create -g demo -n web --image apps/web:1.0.0 --instance-count 3 --vm-sku Shoal_1vCPU_512MB",
    )
    else {
        panic!()
    };
    assert_eq!(
        args.location, None,
        "filled from the resource group at run time"
    );
    assert!(vmss::request_for(SUB, &VmssCommand::Create(args.clone())).is_err());
    args.location = Some("local".into());
    let req = vmss::request_for(SUB, &VmssCommand::Create(args)).unwrap();
    assert_eq!(req.method, Method::PUT);
    assert_eq!(req.path, VMSS);
    assert_eq!(
        req.body,
        Some(json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 3},
            "properties": {
                "orchestrationMode": "Uniform",
                "upgradePolicy": {"mode": "Manual"},
                "virtualMachineProfile": {
                    "osProfile": {"computerNamePrefix": "web"},
                    "storageProfile": {"imageReference": {"id": format!("{GALLERY}/images/web/versions/1.0.0")}}
                }
            }
        }))
    );
    assert_eq!(
        req.kind,
        Kind::Write {
            no_wait: false,
            table: Table::ScaleSet
        }
    );
}

#[test]
fn vmss_create_with_every_option() {
    let req = vmss_request(
        "vmss create -g demo -n web --image apps/web --instance-count 10 --vm-sku Standard_B1s -l west \
         --upgrade-policy-mode automatic --custom-data hello-world --zones 1 2 3 --scale-in-policy NewestVM \
         --orchestration-mode Flexible --platform-fault-domain-count 2 --tags env=dev --no-wait",
    );
    let body = req.body.unwrap();
    assert_eq!(body["location"], "west");
    assert_eq!(body["sku"], json!({"name": "Standard_B1s", "capacity": 10}));
    assert_eq!(body["zones"], json!(["1", "2", "3"]));
    assert_eq!(body["tags"], json!({"env": "dev"}));
    let props = &body["properties"];
    assert_eq!(props["orchestrationMode"], "Flexible");
    assert_eq!(props["upgradePolicy"], json!({"mode": "Automatic"}));
    assert_eq!(props["scaleInPolicy"], json!({"rules": ["NewestVM"]}));
    assert_eq!(props["platformFaultDomainCount"], 2);
    assert_eq!(
        props["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"],
        format!("{GALLERY}/images/web"),
        "no version means latest: the image definition's id"
    );
    let custom = props["virtualMachineProfile"]["osProfile"]["customData"]
        .as_str()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(custom)
        .unwrap();
    assert_eq!(decoded, b"hello-world");
    assert_eq!(
        req.kind,
        Kind::Write {
            no_wait: true,
            table: Table::ScaleSet
        }
    );
}

#[test]
fn custom_data_is_read_from_a_file_when_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud-init.txt");
    std::fs::write(&file, "#!/bin/sh\necho from file\n").unwrap();
    let req = vmss_request(&format!(
        "vmss update -g demo -n web --custom-data {}",
        file.display()
    ));
    let body = req.body.unwrap();
    let encoded = body["properties"]["virtualMachineProfile"]["osProfile"]["customData"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
        b"#!/bin/sh\necho from file\n"
    );
}

#[test]
fn vmss_create_refuses_bad_images_and_values() {
    let err = parse_err("vmss create -g demo -n web --image web --instance-count 1");
    assert!(
        err.contains("Invalid image 'web': it names no gallery"),
        "{err}"
    );
    let err =
        parse_err("vmss create -g demo -n web --image apps/web --upgrade-policy-mode Sometimes");
    assert!(err.contains("invalid value 'Sometimes'"), "{err}");
    let err = parse_err("vmss create -g demo -n web --image apps/web --instance-count=-1");
    assert!(err.contains("--instance-count"), "{err}");
    let full = "/subscriptions/x/resourceGroups/other/providers/Microsoft.Compute/galleries/g/images/i/versions/3";
    let req = vmss_request(&format!(
        "vmss create -g demo -n web --image {full} -l local"
    ));
    assert_eq!(
        req.body.unwrap()["properties"]["virtualMachineProfile"]["storageProfile"]
            ["imageReference"]["id"],
        full
    );
}

#[test]
fn vmss_reads() {
    let req = vmss_request("vmss show -g demo -n web");
    assert_eq!(
        (req.method, req.path.as_str(), req.kind),
        (Method::GET, VMSS, Kind::Show(Table::ScaleSet))
    );
    let req = vmss_request("vmss show -g demo -n web --instance-id 3");
    assert_eq!(req.path, format!("{VMSS}/virtualMachines/3"));
    let req = vmss_request("vmss list -g demo");
    assert_eq!(
        req.path,
        format!("/subscriptions/{SUB}/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets")
    );
    assert_eq!(req.kind, Kind::List(Table::ScaleSet));
    let req = vmss_request("vmss list");
    assert_eq!(
        req.path,
        format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets")
    );
    let req = vmss_request("vmss list-instances -g demo -n web");
    assert_eq!(
        req.path,
        format!("{VMSS}/virtualMachines?$expand=instanceView")
    );
    assert_eq!(req.kind, Kind::List(Table::Instances));
    let req = vmss_request("vmss get-instance-view -g demo -n web");
    assert_eq!(req.path, format!("{VMSS}/instanceView"));
    let req = vmss_request("vmss get-instance-view -g demo -n web --instance-id 0");
    assert_eq!(req.path, format!("{VMSS}/virtualMachines/0/instanceView"));
    assert_eq!(req.kind, Kind::Show(Table::InstanceView));
    let req = vmss_request("vmss list-skus -g demo -n web");
    assert_eq!(
        (req.path, req.kind),
        (format!("{VMSS}/skus"), Kind::List(Table::Skus))
    );
}

#[test]
fn vmss_logs() {
    let req = vmss_request("vmss logs -g demo -n web --instance-id 2");
    assert_eq!(
        (req.method, req.path, req.kind),
        (
            Method::GET,
            format!("{VMSS}/virtualMachines/2/shoal/logs"),
            Kind::Stream
        )
    );
    let req = vmss_request("vmss logs -g demo -n web --instance-id 2 --follow --tail 20");
    assert_eq!(
        req.path,
        format!("{VMSS}/virtualMachines/2/shoal/logs?follow=true&tail=20")
    );
    assert!(parse_err("vmss logs -g demo -n web").contains("--instance-id"));
}

#[test]
fn vmss_delete_and_scale() {
    let req = vmss_request("vmss delete -g demo -n web");
    assert_eq!(
        (req.method, req.path.as_str(), req.body, req.kind),
        (Method::DELETE, VMSS, None, Kind::Action { no_wait: false })
    );
    let req = vmss_request("vmss scale -g demo -n web --new-capacity 10");
    assert_eq!(req.method, Method::PATCH);
    assert_eq!(req.path, VMSS);
    assert_eq!(req.body, Some(json!({"sku": {"capacity": 10}})));
    assert_eq!(
        req.kind,
        Kind::Write {
            no_wait: false,
            table: Table::ScaleSet
        }
    );
    assert!(parse_err("vmss scale -g demo -n web").contains("--new-capacity"));
}

#[test]
fn vmss_power_actions() {
    for (verb, path) in [
        ("start", "start"),
        ("stop", "powerOff"),
        ("restart", "restart"),
        ("deallocate", "deallocate"),
        ("reimage", "reimage"),
    ] {
        let all = vmss_request(&format!("vmss {verb} -g demo -n web"));
        assert_eq!(all.method, Method::POST);
        assert_eq!(all.path, format!("{VMSS}/{path}"));
        assert_eq!(all.body, None, "{verb}: no body means every instance");
        assert_eq!(all.kind, Kind::Action { no_wait: false });
        let some = vmss_request(&format!(
            "vmss {verb} -g demo -n web --instance-ids 3 4 --no-wait"
        ));
        assert_eq!(some.body, Some(json!({"instanceIds": ["3", "4"]})));
        assert_eq!(some.kind, Kind::Action { no_wait: true });
    }
}

#[test]
fn vmss_instance_operations() {
    let req = vmss_request("vmss update-instances -g demo -n web --instance-ids *");
    assert_eq!(
        (req.method, req.path),
        (Method::POST, format!("{VMSS}/manualupgrade"))
    );
    assert_eq!(req.body, Some(json!({"instanceIds": ["*"]})));
    let req = vmss_request("vmss delete-instances -g demo -n web --instance-ids 5 6");
    assert_eq!(
        (req.method, req.path),
        (Method::POST, format!("{VMSS}/delete"))
    );
    assert_eq!(req.body, Some(json!({"instanceIds": ["5", "6"]})));
    assert!(parse_err("vmss delete-instances -g demo -n web").contains("--instance-ids"));
}

#[test]
fn vmss_update_patches_the_set() {
    let req = vmss_request(
        "vmss update -g demo -n web --image apps/web:1.1.0 --vm-sku Shoal_2vCPU_1024MB \
         --upgrade-policy-mode Automatic --set properties.scaleInPolicy.rules=[\"OldestVM\"] tags.env=prod sku.capacity=4",
    );
    assert_eq!((req.method, req.path.as_str()), (Method::PATCH, VMSS));
    assert_eq!(
        req.body,
        Some(json!({
            "sku": {"name": "Shoal_2vCPU_1024MB", "capacity": 4},
            "tags": {"env": "prod"},
            "properties": {
                "upgradePolicy": {"mode": "Automatic"},
                "scaleInPolicy": {"rules": ["OldestVM"]},
                "virtualMachineProfile": {"storageProfile": {"imageReference": {
                    "id": format!("{GALLERY}/images/web/versions/1.1.0")
                }}}
            }
        }))
    );
    assert_eq!(
        req.kind,
        Kind::Write {
            no_wait: false,
            table: Table::ScaleSet
        }
    );

    let req =
        vmss_request("vmss update -g demo -n web --set properties.upgradePolicy.mode=Rolling");
    assert_eq!(
        req.body,
        Some(json!({"properties": {"upgradePolicy": {"mode": "Rolling"}}}))
    );

    let cmd = match parse("vmss update -g demo -n web").command {
        ClientCommand::Vmss(cmd) => cmd,
        _ => panic!(),
    };
    let err = vmss::request_for(SUB, &cmd).unwrap_err().to_string();
    assert!(err.starts_with("Nothing to update"), "{err}");
    let err = parse_err("vmss update -g demo -n web --set zones[0]=1");
    assert!(err.contains("cannot index into lists"), "{err}");
    let err = parse_err("vmss update -g demo -n web --set novalue");
    assert!(err.contains("is not PATH=VALUE"), "{err}");
}

#[test]
fn vmss_update_protects_one_instance() {
    let req = vmss_request(
        "vmss update -g demo -n web --instance-id 3 --protect-from-scale-in true --protect-from-scale-set-actions false",
    );
    assert_eq!(
        (req.method, req.path),
        (Method::PUT, format!("{VMSS}/virtualMachines/3"))
    );
    assert_eq!(
        req.body,
        Some(json!({"properties": {"protectionPolicy": {
            "protectFromScaleIn": true, "protectFromScaleSetActions": false
        }}}))
    );
    assert_eq!(
        req.kind,
        Kind::Write {
            no_wait: false,
            table: Table::Instances
        }
    );

    let err = parse_err("vmss update -g demo -n web --protect-from-scale-in true");
    assert!(err.contains("--instance-id"), "{err}");
    let err = parse_err("vmss update -g demo -n web --instance-id 3 --image apps/web");
    assert!(err.contains("cannot be used with"), "{err}");
    let err = parse_err("vmss update -g demo -n web --instance-id 3 --protect-from-scale-in maybe");
    assert!(err.contains("invalid value 'maybe'"), "{err}");
}

/// The table columns `vmss list-instances -o table` promises.
#[test]
fn instance_tables_read_the_documented_fields() {
    let instances: Value = json!([{
        "instanceId": "0", "name": "web_0", "zones": ["2"],
        "properties": {"provisioningState": "Succeeded", "latestModelApplied": true,
                       "shoal": {"powerState": "running", "address": "127.0.0.1:40001"}}
    }]);
    let text =
        shoal_cli::output::render(OutputFormat::Table, Table::Instances, &instances).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        headers,
        [
            "InstanceId",
            "Name",
            "ProvisioningState",
            "PowerState",
            "LatestModelApplied",
            "Address",
            "Zone"
        ]
    );
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "0",
            "web_0",
            "Succeeded",
            "running",
            "True",
            "127.0.0.1:40001",
            "2"
        ]
    );
}
