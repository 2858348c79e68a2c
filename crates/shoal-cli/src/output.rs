//! Printing results: pretty JSON (as `az`), tables, or nothing.
//!
//! In: a JSON value (one resource or an array of them) and the [`Table`] shape the command
//! chose. Out: text on stdout. Rendering is pure ([`render`]) so tests read the text.

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Pretty-printed JSON, exactly the resources the API returned.
    Json,
    /// A human-readable table of the most useful fields.
    Table,
    /// Print nothing (the exit code still tells success).
    None,
}

/// Which columns a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Name, Location, ProvisioningState.
    Generic,
    /// Scale sets: adds ResourceGroup, Sku, Capacity and UpgradePolicy.
    ScaleSet,
    /// Scale-set instances: InstanceId, Name, ProvisioningState, PowerState,
    /// LatestModelApplied, Address, Zone.
    Instances,
    /// Gallery image versions: Gallery, Image, Version, Kind, Command, Port, state.
    ImageVersions,
    /// An instance view's statuses (and, for a set, its per-state counts).
    InstanceView,
    /// The sizes a scale set can use.
    Skus,
}

/// Writes results to stdout (or, in tests, to a buffer).
pub struct Printer {
    format: OutputFormat,
    sink: Sink,
}

enum Sink {
    Stdout,
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl Printer {
    pub fn stdout(format: OutputFormat) -> Self {
        Printer {
            format,
            sink: Sink::Stdout,
        }
    }

    /// A printer into memory, and the buffer it fills (for tests).
    pub fn buffer(format: OutputFormat) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let printer = Printer {
            format,
            sink: Sink::Buffer(Arc::clone(&buffer)),
        };
        (printer, buffer)
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Prints `value`; a closed stdout (`| head`) is not an error.
    pub fn print(&self, table: Table, value: &Value) -> std::io::Result<()> {
        let Some(text) = render(self.format, table, value) else {
            return Ok(());
        };
        self.write_raw(text.as_bytes())
    }

    /// Writes bytes as they are (streamed logs); a closed stdout is not an error.
    pub fn write_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let result = match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Sink::Buffer(buffer) => {
                buffer
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend_from_slice(bytes);
                Ok(())
            }
        };
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// The text `value` prints as, or `None` when nothing is printed.
pub fn render(format: OutputFormat, table: Table, value: &Value) -> Option<String> {
    match format {
        OutputFormat::None => None,
        OutputFormat::Json => {
            let mut text =
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
            text.push('\n');
            Some(text)
        }
        OutputFormat::Table => {
            let text = render_table(table, value);
            (!text.is_empty()).then_some(text)
        }
    }
}

/// `value` (one object or an array of them) as a table in `az`'s style: headers, a dashed
/// rule, then one row per item, columns two spaces apart.
pub fn render_table(table: Table, value: &Value) -> String {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    if table == Table::InstanceView {
        return render_instance_views(&items);
    }
    let headers = headers(table);
    let rows: Vec<Vec<String>> = items.iter().map(|item| row(table, item)).collect();
    grid(headers, &rows)
}

fn headers(table: Table) -> &'static [&'static str] {
    match table {
        Table::Generic => &["Name", "Location", "ProvisioningState"],
        Table::ScaleSet => &[
            "Name",
            "ResourceGroup",
            "Location",
            "Sku",
            "Capacity",
            "UpgradePolicy",
            "ProvisioningState",
        ],
        Table::Instances => &[
            "InstanceId",
            "Name",
            "ProvisioningState",
            "PowerState",
            "LatestModelApplied",
            "Address",
            "Zone",
        ],
        Table::ImageVersions => &[
            "Gallery",
            "Image",
            "Version",
            "Kind",
            "Command",
            "Port",
            "ProvisioningState",
        ],
        Table::Skus => &[
            "ResourceType",
            "Sku",
            "Tier",
            "Minimum",
            "Maximum",
            "DefaultCapacity",
        ],
        Table::InstanceView => &["Code", "Level", "DisplayStatus", "Time"],
    }
}

fn row(table: Table, item: &Value) -> Vec<String> {
    let at = |pointer: &str| cell(item.pointer(pointer));
    match table {
        Table::Generic => vec![
            at("/name"),
            at("/location"),
            at("/properties/provisioningState"),
        ],
        Table::ScaleSet => vec![
            at("/name"),
            id_segment(item, "resourceGroups"),
            at("/location"),
            at("/sku/name"),
            at("/sku/capacity"),
            at("/properties/upgradePolicy/mode"),
            at("/properties/provisioningState"),
        ],
        Table::Instances => vec![
            at("/instanceId"),
            at("/name"),
            at("/properties/provisioningState"),
            power_state(item),
            at("/properties/latestModelApplied"),
            at("/properties/shoal/address"),
            at("/zones/0"),
        ],
        Table::ImageVersions => vec![
            id_segment(item, "galleries"),
            id_segment(item, "images"),
            at("/name"),
            at("/properties/shoal/kind"),
            at("/properties/shoal/command"),
            at("/properties/shoal/port"),
            at("/properties/provisioningState"),
        ],
        Table::Skus => vec![
            at("/resourceType"),
            at("/sku/name"),
            at("/sku/tier"),
            at("/capacity/minimum"),
            at("/capacity/maximum"),
            at("/capacity/defaultCapacity"),
        ],
        Table::InstanceView => vec![at("/code"), at("/level"), at("/displayStatus"), at("/time")],
    }
}

/// `properties.shoal.powerState`, else the `PowerState/…` status of the instance view.
fn power_state(item: &Value) -> String {
    if let Some(state) = item.pointer("/properties/shoal/powerState") {
        return cell(Some(state));
    }
    item.pointer("/properties/instanceView/statuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|status| status.get("code").and_then(Value::as_str))
        .find_map(|code| code.strip_prefix("PowerState/"))
        .unwrap_or_default()
        .to_owned()
}

/// The segment after `key` in the item's ARM `id` (case-insensitive), e.g. the gallery.
fn id_segment(item: &Value, key: &str) -> String {
    let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut parts = id.split('/');
    while let Some(part) = parts.next() {
        if part.eq_ignore_ascii_case(key) {
            return parts.next().unwrap_or_default().to_owned();
        }
    }
    String::new()
}

/// Instance views: their statuses, then (for a whole set) the count of instances in each
/// state.
fn render_instance_views(items: &[&Value]) -> String {
    let mut statuses = Vec::new();
    let mut summary = Vec::new();
    for item in items {
        for status in item
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            statuses.push(row(Table::InstanceView, status));
        }
        for count in item
            .pointer("/virtualMachine/statusesSummary")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            summary.push(vec![cell(count.get("code")), cell(count.get("count"))]);
        }
    }
    let mut text = grid(headers(Table::InstanceView), &statuses);
    if !summary.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&grid(&["Code", "Count"], &summary));
    }
    text
}

/// A JSON value as a table cell: strings bare, booleans as `True`/`False` (as `az`),
/// arrays joined, missing as empty.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

fn grid(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        let trimmed = text.trim_end_matches(' ').len();
        text.truncate(trimmed);
        text.push('\n');
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.clone());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(id: &str, state: &str, address: &str, latest: bool) -> Value {
        json!({
            "instanceId": id,
            "name": format!("web_{id}"),
            "zones": ["1"],
            "properties": {
                "provisioningState": "Succeeded",
                "latestModelApplied": latest,
                "shoal": {"powerState": state, "address": address}
            }
        })
    }

    #[test]
    fn instances_table_has_the_documented_columns() {
        let list = json!([
            instance("0", "running", "127.0.0.1:41001", true),
            instance("10", "stopped", "127.0.0.1:41002", false),
        ]);
        let text = render_table(Table::Instances, &list);
        let expected = "\
InstanceId  Name    ProvisioningState  PowerState  LatestModelApplied  Address          Zone
----------  ------  -----------------  ----------  ------------------  ---------------  ----
0           web_0   Succeeded          running     True                127.0.0.1:41001  1
10          web_10  Succeeded          stopped     False               127.0.0.1:41002  1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn power_state_falls_back_to_the_instance_view() {
        let item = json!({"properties": {"instanceView": {"statuses": [
            {"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}
        ]}}});
        assert_eq!(power_state(&item), "running");
    }

    #[test]
    fn scale_sets_show_sku_and_capacity() {
        let set = json!({
            "id": "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web",
            "name": "web", "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 3},
            "properties": {"provisioningState": "Succeeded", "upgradePolicy": {"mode": "Manual"}}
        });
        let text = render_table(Table::ScaleSet, &set);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "Name  ResourceGroup  Location  Sku                Capacity  UpgradePolicy  ProvisioningState"
        );
        lines.next();
        assert_eq!(
            lines.next().unwrap(),
            "web   demo           local     Shoal_1vCPU_512MB  3         Manual         Succeeded"
        );
    }

    #[test]
    fn generic_table_and_empty_lists() {
        let groups = json!([{"name": "demo", "location": "local", "properties": {"provisioningState": "Succeeded"}}]);
        assert_eq!(
            render_table(Table::Generic, &groups),
            "Name  Location  ProvisioningState\n----  --------  -----------------\ndemo  local     Succeeded\n"
        );
        assert_eq!(
            render(OutputFormat::Table, Table::Generic, &json!([])),
            None
        );
        assert_eq!(render(OutputFormat::None, Table::Generic, &groups), None);
    }

    #[test]
    fn image_versions_name_gallery_and_image_from_the_id() {
        let version = json!({
            "id": "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0",
            "name": "1.0.0",
            "properties": {"provisioningState": "Succeeded", "shoal": {"kind": "process", "command": "./shoal-web", "port": 8080}}
        });
        let text = render_table(Table::ImageVersions, &version);
        assert!(
            text.ends_with("apps     web    1.0.0    process  ./shoal-web  8080  Succeeded\n"),
            "{text}"
        );
    }

    #[test]
    fn instance_view_lists_statuses_and_counts() {
        let view = json!({
            "virtualMachine": {"statusesSummary": [{"code": "ProvisioningState/succeeded", "count": 3}]},
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}]
        });
        let text = render_table(Table::InstanceView, &view);
        assert!(
            text.contains("ProvisioningState/succeeded  Info   Provisioning succeeded"),
            "{text}"
        );
        assert!(text.contains("ProvisioningState/succeeded  3"), "{text}");
    }

    #[test]
    fn json_is_pretty_like_az() {
        let text = render(OutputFormat::Json, Table::Generic, &json!({"a": [1]})).unwrap();
        assert_eq!(text, "{\n  \"a\": [\n    1\n  ]\n}\n");
    }
}
